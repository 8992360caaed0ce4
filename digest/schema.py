"""The store's schema: an append-only list of migrations (``PRAGMA user_version`` counts them).

Never edit a migration that has shipped; add the next one.
"""

from __future__ import annotations

MIGRATIONS: tuple[str, ...] = (
    # 1: the spine
    """
    CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL CHECK (kind IN ('run', 'backfill')),
        started_at TEXT NOT NULL
    );
    CREATE TABLE dumps (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        sha256 TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        path TEXT NOT NULL,
        size INTEGER,
        mtime_ns INTEGER,
        shape TEXT NOT NULL,
        page_date TEXT,
        run_id INTEGER NOT NULL REFERENCES runs(id),
        ingested_at TEXT NOT NULL,
        entries INTEGER NOT NULL,
        new_papers INTEGER NOT NULL,
        warnings TEXT NOT NULL DEFAULT '[]'
    );
    CREATE INDEX dumps_file ON dumps(path, size, mtime_ns);
    CREATE TABLE papers (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        key TEXT NOT NULL UNIQUE,
        title_norm TEXT NOT NULL,
        arxiv_id TEXT,
        title TEXT NOT NULL,
        abstract TEXT NOT NULL,
        authors INTEGER,
        author_names TEXT NOT NULL DEFAULT '[]',
        published TEXT,
        date_raw TEXT,
        upvotes INTEGER,
        links TEXT NOT NULL DEFAULT '[]',
        url TEXT,
        first_run INTEGER NOT NULL REFERENCES runs(id),
        first_dump INTEGER NOT NULL REFERENCES dumps(id),
        first_seen TEXT NOT NULL
    );
    CREATE INDEX papers_title_norm ON papers(title_norm);
    CREATE UNIQUE INDEX papers_arxiv ON papers(arxiv_id) WHERE arxiv_id IS NOT NULL;
    CREATE INDEX papers_first_run ON papers(first_run);
    CREATE TABLE sightings (
        paper_id INTEGER NOT NULL REFERENCES papers(id),
        dump_id INTEGER NOT NULL REFERENCES dumps(id),
        line INTEGER NOT NULL,
        date_raw TEXT,
        upvotes INTEGER,
        PRIMARY KEY (paper_id, dump_id)
    ) WITHOUT ROWID;
    CREATE TABLE subscribers (
        name TEXT PRIMARY KEY,
        cursor_run INTEGER NOT NULL,
        created_at TEXT NOT NULL,
        last_issue INTEGER NOT NULL DEFAULT 0,
        last_digest_at TEXT
    );
    CREATE TABLE issues (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        subscriber TEXT NOT NULL REFERENCES subscribers(name),
        number INTEGER NOT NULL,
        from_run INTEGER NOT NULL,
        to_run INTEGER NOT NULL,
        generated_at TEXT NOT NULL,
        new_papers INTEGER NOT NULL,
        matched INTEGER NOT NULL,
        markdown_path TEXT,
        html_path TEXT,
        UNIQUE (subscriber, number)
    );
    CREATE TABLE issue_items (
        issue_id INTEGER NOT NULL REFERENCES issues(id),
        rank INTEGER NOT NULL,
        paper_id INTEGER NOT NULL REFERENCES papers(id),
        score REAL NOT NULL,
        matches TEXT NOT NULL,
        PRIMARY KEY (issue_id, rank)
    ) WITHOUT ROWID;
    """,
    # 2: e-mail delivery through an outbox
    """
    ALTER TABLE subscribers ADD COLUMN unsubscribed_at TEXT;
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        issue_id INTEGER NOT NULL UNIQUE REFERENCES issues(id),
        subscriber TEXT NOT NULL REFERENCES subscribers(name),
        recipient TEXT NOT NULL,
        message_id TEXT NOT NULL,
        subject TEXT NOT NULL,
        raw BLOB NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'failed')),
        attempts INTEGER NOT NULL DEFAULT 0,
        uncertain INTEGER NOT NULL DEFAULT 0,
        next_attempt_at TEXT NOT NULL,
        last_error TEXT,
        created_at TEXT NOT NULL,
        sent_at TEXT
    );
    CREATE INDEX outbox_due ON outbox(status, next_attempt_at);
    """,
    # 3: the scheduler's memory and the live sources' conditional-GET state
    """
    CREATE TABLE jobs (
        name TEXT PRIMARY KEY,
        last_slot TEXT,
        last_run TEXT NOT NULL
    );
    CREATE TABLE source_state (
        name TEXT PRIMARY KEY,
        url TEXT,
        etag TEXT,
        last_modified TEXT,
        last_fetch TEXT,
        last_status TEXT,
        last_error TEXT
    );
    """,
    # 4: what live sources say beyond title and abstract; e-mail retries counted in time
    """
    ALTER TABLE papers ADD COLUMN summary TEXT NOT NULL DEFAULT '';
    ALTER TABLE papers ADD COLUMN version INTEGER;
    ALTER TABLE papers ADD COLUMN revision_only INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE sightings ADD COLUMN version INTEGER;
    ALTER TABLE outbox ADD COLUMN uncertain_since TEXT;
    ALTER TABLE outbox ADD COLUMN failed_at TEXT;
    """,
    # 5: readers' votes (they train their ranking) and paper embeddings per model
    """
    CREATE TABLE feedback (
        subscriber TEXT NOT NULL,
        paper_id INTEGER NOT NULL REFERENCES papers(id),
        vote INTEGER NOT NULL CHECK (vote IN (-1, 1)),
        at TEXT NOT NULL,
        PRIMARY KEY (subscriber, paper_id)
    ) WITHOUT ROWID;
    CREATE TABLE vectors (
        paper_id INTEGER NOT NULL REFERENCES papers(id),
        model TEXT NOT NULL,
        vector BLOB NOT NULL,
        PRIMARY KEY (paper_id, model)
    ) WITHOUT ROWID;
    """,
    # 6: the listing dates of a run's dumps (each issue page asks) by index, not by a scan
    """
    CREATE INDEX dumps_run ON dumps(run_id);
    """,
    # 7: what publishing reads again and again, kept once: each issue's matched keywords
    # (filled for older issues from issue_items by store.py, in the migration's
    # transaction) and the rendered HTML of each feed entry (valid while ``source``, a hash
    # of what made it, still matches; rows fall away as entries leave the feed's window)
    """
    ALTER TABLE issues ADD COLUMN terms TEXT;
    CREATE TABLE feed_entries (
        subscriber TEXT NOT NULL,
        issue_id INTEGER NOT NULL REFERENCES issues(id),
        rank INTEGER NOT NULL,
        source TEXT NOT NULL,
        html TEXT NOT NULL,
        PRIMARY KEY (subscriber, issue_id, rank)
    ) WITHOUT ROWID;
    CREATE INDEX issue_items_paper ON issue_items(paper_id);
    """,
    # 8: what enrichment found out about papers read without a link (the link, arXiv id and
    # names themselves go in papers); rows still ``pending`` are asked again from
    # ``next_at`` (backing off per attempt). Papers first seen before this migration are
    # not looked up (``enriched_upto``). Issue pages showing a paper that changed since
    # they were rendered wait in ``stale_pages`` for the next site build.
    """
    CREATE TABLE enrichment (
        paper_id INTEGER PRIMARY KEY REFERENCES papers(id),
        source TEXT NOT NULL,
        pending INTEGER NOT NULL,
        reason TEXT NOT NULL,
        page_date TEXT,
        checked_at TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_at TEXT
    );
    CREATE INDEX enrichment_pending ON enrichment(next_at) WHERE pending = 1;
    CREATE TABLE stale_pages (
        issue_id INTEGER PRIMARY KEY REFERENCES issues(id)
    );
    INSERT OR REPLACE INTO meta (key, value)
        SELECT 'enriched_upto', CAST(coalesce(max(id), 0) AS TEXT) FROM runs;
    """,
    # 9: several senders at once (threads, processes, hosts): a message is claimed by one
    # (``claimed_by`` until ``lease_until``; a sender that died is taken over when its lease
    # ends) and ``tried`` orders the last tries, so a pass tries a message at most once;
    # ``send_pace`` holds the next free send slot (epoch seconds) of the whole store, so
    # [smtp].max_per_minute holds across every sender. Beside the outbox rather than in it,
    # and IF NOT EXISTS, so this migration may run again over a store that has it.
    """
    CREATE TABLE IF NOT EXISTS outbox_claims (
        id INTEGER PRIMARY KEY REFERENCES outbox(id),
        claimed_by TEXT,
        lease_until TEXT,
        tried INTEGER
    );
    CREATE INDEX IF NOT EXISTS outbox_claims_worker ON outbox_claims(claimed_by);
    CREATE INDEX IF NOT EXISTS outbox_claims_tried ON outbox_claims(tried);
    CREATE TABLE IF NOT EXISTS send_pace (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        next_at REAL NOT NULL,
        tries INTEGER NOT NULL DEFAULT 0
    );
    INSERT INTO send_pace (id, next_at) VALUES (1, 0) ON CONFLICT DO NOTHING;
    """,
    # 10: what changed under the published files, told to every publisher (each host has
    # its own feeds and site): a reader's feed generation grows when a paper in their feed
    # changes, and each changed issue page is a numbered row; a publisher remembers the
    # generations and the last row it built from (meta keyed by its data folder).
    """
    CREATE TABLE IF NOT EXISTS feed_changes (
        subscriber TEXT PRIMARY KEY,
        n INTEGER NOT NULL
    );
    CREATE TABLE IF NOT EXISTS page_changes (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        issue_id INTEGER NOT NULL REFERENCES issues(id)
    );
    INSERT INTO page_changes (issue_id) SELECT issue_id FROM stale_pages ORDER BY issue_id;
    DELETE FROM stale_pages;
    """,
    # 11: a run's digests shared among workers and hosts: a reader is claimed by one
    # (``claimed_by`` until ``lease_until``; the issue itself is recorded only if the
    # reader's cursor has not moved, so a lease that ran out cannot double an issue), and
    # kept counts (``tallies``: the papers) so a run never counts a growing table. The
    # fingerprints of before publishers (one per data folder) go: they are never read.
    """
    CREATE TABLE IF NOT EXISTS render_claims (
        subscriber TEXT PRIMARY KEY,
        claimed_by TEXT NOT NULL,
        lease_until TEXT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS tallies (
        name TEXT PRIMARY KEY,
        n INTEGER NOT NULL
    );
    INSERT INTO tallies (name, n) SELECT 'papers', count(*) FROM papers WHERE 1 = 1
        ON CONFLICT (name) DO UPDATE SET n = excluded.n;
    DELETE FROM meta WHERE key IN ('site_fingerprint', 'site_built', 'feeds_built')
        OR (substr(key, 1, 17) = 'feed_fingerprint:' AND substr(key, 18) NOT LIKE '%:%');
    """,
)
