"""How fast is ranking? ``digest rank --json`` and many subscribers, beside a naive ranker.

    python bench/rank_speed.py [--papers 10000] [--keywords 20] [--subscribers 1000] [--quick]

A dump of --papers papers recombined from the shared dumps' real titles and abstracts
(fixed seed), then (1) the whole ``digest rank --json`` process against a naive regex script
that also parses the dump and prints the same fields (best of 3, CPU and wall); (2)
``Corpus.build`` once and ``rank`` per subscriber, as a run does, against the naive ranker
timed on a sample of subscribers and scaled up. --quick: 2,000 papers, 50 subscribers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from digest.identity import paper_key
from digest.models import Keyword, Paper, Profile
from digest.rank import Corpus, rank, stems_of
from digest.sources import read_dump

SEED = 20261123
ROOT = Path(__file__).resolve().parent.parent
DUMPS = ROOT.parent / "shared" / "dumps"
HEADER = "new\n\nGet trending papers in your email inbox!\n\nSubscribe\n\n" \
         "byAK and the research community\n\nNov 23\n\n"
CLI_KEYWORDS = [  # one reader of this corpus: words, phrases, acronyms
    "CLIP", "ViT", "vision transformer", "contrastive learning", "zero-shot", "pre-training",
    "data curation", "semantic segmentation", "object detection", "diffusion models",
    "large language models", "knowledge distillation", "self-supervised learning",
    "image-text retrieval", "ImageNet", "LoRA", "multimodal", "masked image modeling",
    "few-shot", "efficient"]
POOL = [*CLI_KEYWORDS,  # what a thousand readers of this field might ask for
    "vision transformers", "ViTs", "CNN", "convolutional neural networks", "ResNet", "DeiT",
    "ConvNeXt", "Swin", "MLP", "attention mechanism", "self-attention", "linear attention",
    "token pruning", "token merging", "sparse attention", "mixture of experts", "MoE",
    "quantization", "pruning", "model compression", "neural architecture search", "NAS", "FLOPs",
    "latency", "mobile", "edge devices", "hardware", "GPU", "inference speed", "transformer",
    "foundation models", "foundation model", "scaling laws", "scaling", "model size",
    "training data", "data efficiency", "dataset", "benchmark", "benchmarks", "web-scale data",
    "image-text pairs", "captions", "synthetic data", "data filtering", "deduplication", "LAION",
    "DataComp", "COCO", "ADE20K", "CIFAR", "VTAB", "zero-shot classification", "linear probing",
    "fine-tuning", "parameter-efficient fine-tuning", "PEFT", "adapters", "prompt learning",
    "prompt tuning", "visual prompting", "in-context learning", "instruction tuning",
    "vision-language models", "VLM", "VLMs", "multimodal large language models", "MLLMs", "LLaVA",
    "BLIP", "GPT", "LLM", "LLMs", "BERT", "language models", "text encoder", "image encoder",
    "vision encoder", "visual representations", "representation learning",
    "contrastive language-image pre-training", "language-image pretraining", "SigLIP", "OpenCLIP",
    "MetaCLIP", "masked autoencoders", "MAE", "DINO", "DINOv2", "distillation", "teacher-student",
    "knowledge transfer", "transfer learning", "domain adaptation", "domain generalization",
    "out-of-distribution", "OOD", "robustness", "adversarial robustness", "adversarial attacks",
    "calibration", "uncertainty", "continual learning", "catastrophic forgetting",
    "federated learning", "privacy", "fairness", "bias", "interpretability", "explainability",
    "attention maps", "saliency", "dense prediction", "instance segmentation",
    "panoptic segmentation", "open-vocabulary", "open-vocabulary detection",
    "open-vocabulary segmentation", "referring segmentation", "grounding", "visual grounding",
    "depth estimation", "optical flow", "tracking", "video understanding", "video",
    "action recognition", "temporal modeling", "3D", "point clouds", "NeRF", "3D reconstruction",
    "image generation", "text-to-image", "diffusion", "generative models", "GAN", "image editing",
    "super-resolution", "image restoration", "image captioning", "visual question answering", "VQA",
    "retrieval", "cross-modal retrieval", "composed image retrieval", "medical imaging",
    "radiology", "pathology", "remote sensing", "satellite imagery", "autonomous driving",
    "robotics", "embodied AI", "reinforcement learning", "reward model", "RLHF", "hallucination",
    "evaluation", "human preference", "alignment", "compositionality", "counting",
    "spatial reasoning", "reasoning", "OCR", "document understanding", "chart understanding",
    "fine-grained recognition", "long-tail", "class imbalance", "semi-supervised learning",
    "weakly supervised", "unsupervised", "clustering", "self-training", "pseudo-labels",
    "curriculum learning", "data augmentation", "mixup", "regularization", "optimization",
    "learning rate", "batch size", "LayerNorm", "positional encoding", "patch embedding",
    "high resolution", "multi-scale", "hierarchical", "graph neural networks", "GNN", "speech",
    "audio", "multilingual", "sign language", "zero-shot transfer", "few-shot learning",
    "meta-learning", "energy efficiency"
]
NAIVE = r'''import json, re, sys
from pathlib import Path
from digest.sources import read_dump

terms = sys.argv[2:]
scored = []
for p in read_dump(Path(sys.argv[1])).papers:
    score, matches = 0, []
    for kw in terms:
        t = len(re.findall(r"\b" + re.escape(kw) + r"\b", p.title, re.I))
        a = len(re.findall(r"\b" + re.escape(kw) + r"\b", p.abstract, re.I))
        if t or a:
            score += 3 * t + a
            matches.append({"term": kw, "weight": 1.0, "title": t, "abstract": a,
                            "contribution": float(3 * t + a)})
    if score:
        scored.append((score, p, matches))
scored.sort(key=lambda r: (-r[0], r[1].title.casefold()))
print(json.dumps([{"rank": n, "title": p.title, "score": float(s), "matches": m, "key": p.key,
                   "source": p.source, "line": p.line}
                  for n, (s, p, m) in enumerate(scored, 1)], indent=2, ensure_ascii=False))
'''
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def synthesise(n: int, rng: random.Random) -> list[tuple[str, str]]:
    """n (title, abstract) pairs recombined from the real dumps; titles unique by key."""
    real = [p for f in sorted(DUMPS.glob("*.txt")) for p in read_dump(f).papers]
    sentences = [[" ".join(s.split()) for s in _SENTENCE.split(p.abstract) if s.strip()]
                 for p in real if p.abstract]
    title_words = [p.title.split() for p in real]
    seen: set[str] = set()
    out: list[tuple[str, str]] = []
    while len(out) < n:
        a, b = rng.sample(title_words, 2)
        cut = rng.randint(1, max(1, len(a) - 1))
        words = a[:cut] + rng.sample(b, min(len(b), rng.randint(2, 6)))
        title = " ".join(words).strip(" :-,.")
        key = paper_key(title)
        if len(words) < 4 or key in seen or title.endswith((".", "!", "?")):
            continue
        seen.add(key)
        picks = [rng.choice(rng.choice(sentences)) for _ in range(rng.randint(5, 10))]
        abstract = " ".join(s if s.endswith((".", "!", "?")) else s + "." for s in picks)
        out.append((title[0].upper() + title[1:], abstract))
    return out


def profiles(rng: random.Random, n: int, k: int) -> list[Profile]:
    """n readers, k keywords each from POOL; popular topics are shared by many readers."""
    weights = [1.0 / (i + 1) ** 0.6 for i in range(len(POOL))]
    out = []
    for s in range(n):
        terms: dict[str, None] = {}
        while len(terms) < min(k, len(POOL)):
            terms[rng.choices(POOL, weights)[0]] = None
        kws = tuple(Keyword(t, float(rng.choice([1, 1, 1, 2]))) for t in terms)
        exclude = (Keyword(rng.choice(POOL[100:])),) if s % 5 == 0 else ()
        out.append(Profile(f"s{s:04d}", f"s{s:04d}@example.org", kws, exclude, max_items=20))
    return out


def naive_rank(papers: list[Paper], profile: Profile) -> list[tuple[float, str]]:
    """The baseline: the script's regex scoring, per subscriber, top max_items."""
    scored = []
    for p in papers:
        score = 0.0
        for kw in profile.keywords:
            t = len(re.findall(r"\b" + re.escape(kw.term) + r"\b", p.title, re.I))
            a = len(re.findall(r"\b" + re.escape(kw.term) + r"\b", p.abstract, re.I))
            score += kw.weight * (3 * t + a)
        if score:
            scored.append((-score, p.title))
    return sorted(scored)[: profile.max_items]


def run_timed(cmd: list[str]) -> tuple[float, float, str]:
    """CPU seconds (user + sys) and wall seconds of one whole child process, and its stdout."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=ROOT)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        sys.exit(f"failed ({done.returncode}): {' '.join(cmd[:4])} ...\n{done.stderr[-2000:]}")
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return cpu, wall, done.stdout


def best_of(cmd: list[str], times: int = 3) -> tuple[float, float, int]:
    """Best CPU and best wall time over ``times`` runs, and how many results it printed."""
    runs = [run_timed(cmd) for _ in range(times)]
    return min(r[0] for r in runs), min(r[1] for r in runs), len(json.loads(runs[-1][2]))


def digest_command() -> list[str]:
    """The installed console script beside this interpreter, else the entry point by hand."""
    script = Path(sys.executable).with_name("digest")
    if script.is_file():
        return [sys.executable, str(script)]
    return [sys.executable, "-c", "import sys; from digest.cli import main; sys.exit(main())"]


def main() -> None:
    """Print the timings."""
    os.environ.setdefault("DIGEST_ENRICH", "0")  # no link lookups: not measured here
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--papers", type=int, default=10_000)
    parser.add_argument("--keywords", type=int, default=20)
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="2,000 papers, 50 subscribers")
    args = parser.parse_args()
    if args.quick:
        args.papers, args.subscribers = min(args.papers, 2000), min(args.subscribers, 50)
    rng = random.Random(SEED)
    work = Path(tempfile.mkdtemp(prefix="digest-rank-bench-"))
    dump = work / "synthetic.txt"
    pairs = synthesise(args.papers, rng)
    dump.write_text(HEADER + "\n\n".join(f"{t}\n\n{a}" for t, a in pairs) + "\n", "utf-8")
    digest = digest_command()
    parsed = json.loads(run_timed([*digest, "parse", "--json", str(dump)])[2])
    assert len(parsed) == args.papers, f"digest parse read {len(parsed)} of {args.papers}"
    papers = list(read_dump(dump).papers)
    print(f"setup: {args.papers:,} papers recombined from the shared dumps "
          f"({dump.stat().st_size / 1e6:.1f} MB, all parsed), in {work}")

    # 1. The whole `digest rank --json` process against the whole naive script.
    kws = POOL[: args.keywords]  # CLI_KEYWORDS first
    extra = [o for o in ["--no-semantic"] if o in run_timed([*digest, "rank", "--help"])[2]]
    ours_cmd = [*digest, "rank", "--json", *extra, *(a for k in kws for a in ("-k", k)),
                str(dump)]
    (work / "naive_rank.py").write_text(NAIVE, encoding="utf-8")
    naive_cmd = [sys.executable, str(work / "naive_rank.py"), str(dump), *kws]
    d_cpu, d_wall, d_n = best_of(ours_cmd)
    n_cpu, n_wall, n_n = best_of(naive_cmd)
    print(f"\n1. whole process, {len(kws)} keywords{' ' + extra[0] if extra else ''}, best of 3")
    print(f"   digest rank --json: {d_cpu:6.2f} s CPU {d_wall:6.2f} s wall, {d_n:,} results")
    print(f"   naive regex script: {n_cpu:6.2f} s CPU {n_wall:6.2f} s wall, {n_n:,} results")
    print(f"   naive/digest: {n_cpu / d_cpu:.1f}x CPU, {n_wall / d_wall:.1f}x wall "
          f"(target >= 5x: {'met' if n_cpu / d_cpu >= 5 else 'MISSED'})")

    # 2. Many subscribers in one process, as a run ranks them.
    subs = profiles(rng, args.subscribers, args.keywords)
    start = time.perf_counter()
    corpus = Corpus.build(papers, stems_of(subs))  # once per batch, as a run does
    t_build = time.perf_counter() - start
    start = time.perf_counter()
    picks = [rank(corpus, p)[0] for p in subs]  # no votes, no vectors: new readers
    t_rank = time.perf_counter() - start
    total = t_build + t_rank
    sample = min(20, args.subscribers)
    start = time.perf_counter()
    _ = [naive_rank(papers, p) for p in subs[:sample]]
    t_naive = (time.perf_counter() - start) * args.subscribers / sample
    empty = sum(1 for p in picks if not p)
    print(f"\n2. {args.subscribers:,} subscribers x {args.keywords} keywords (pool of "
          f"{len(POOL)}), max_items 20, over {args.papers:,} papers")
    print(f"   Corpus.build once {t_build:.2f} s + rank every reader {t_rank:.2f} s "
          f"({t_rank / args.subscribers * 1000:.1f} ms each, {empty} with no picks) = "
          f"{total:.2f} s (target <= 60 s: {'met' if total <= 60 else 'MISSED'})")
    print(f"   naive regex ranker: {t_naive:.2f} s, EXTRAPOLATED from {sample} subscribers "
          f"-> {t_naive / total:.1f}x slower")

    print(f"\nmachine: {os.cpu_count()} CPUs, {platform.platform()}, "
          f"Python {platform.python_version()}")
    rows = [("rank --json CPU s", d_cpu, n_cpu), ("rank --json wall s", d_wall, n_wall),
            ("corpus build s", t_build, None), ("rank all s", t_rank, None),
            ("ms / subscriber", t_rank / args.subscribers * 1000, None),
            ("subscribers total s", total, t_naive)]
    print(f"{'figure':<22}{'digest':>10}{'naive':>10}{'ratio':>8}  (last naive: extrapolated)")
    for name, ours, naive in rows:
        tail = f"{naive:>10.2f}{naive / ours:>7.1f}x" if naive is not None else ""
        print(f"{name:<22}{ours:>10.2f}{tail}")


if __name__ == "__main__":
    main()
