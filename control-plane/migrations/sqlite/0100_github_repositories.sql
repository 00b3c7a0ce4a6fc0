-- GitHub token broker: the repository registry (numbered 0100+ to stay clear of the core schema).
CREATE TABLE github_repositories (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    organization TEXT NOT NULL,
    repository TEXT NOT NULL,
    -- lower(organization || '/' || repository): GitHub names are case-insensitive.
    full_name_lc TEXT NOT NULL UNIQUE,
    app TEXT NOT NULL,
    installation_id INTEGER,
    created_at INTEGER NOT NULL
);
