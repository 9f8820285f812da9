-- Log database, SQL Server: records a sync with `history: true` did not apply, for someone to review: as
-- old as their stored row (same timestamp) or older, yet with different content. One row per record: the
-- latest reason and the differing values (stored and incoming, JSON), how often and when it was first and
-- last seen, the last Dagster run. `sync-pipeline logs --conflicts` lists them.
CREATE TABLE TB_R_SYNC_CONFLICT (
    EntityType NVARCHAR(100) NOT NULL,
    RecordKey NVARCHAR(255) NOT NULL,
    Reason NVARCHAR(400) NOT NULL,
    StoredValues NVARCHAR(MAX) NOT NULL,
    IncomingValues NVARCHAR(MAX) NOT NULL,
    Seen INT NOT NULL,
    FirstSeenOn DATETIME2 NOT NULL,
    LastSeenOn DATETIME2 NOT NULL,
    RunId NVARCHAR(64) NULL,
    CONSTRAINT PK_TB_R_SYNC_CONFLICT PRIMARY KEY (EntityType, RecordKey)
);
