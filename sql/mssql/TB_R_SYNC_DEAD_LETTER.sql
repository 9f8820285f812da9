-- Log database, SQL Server: for syncs run once per customer, each customer's run that still failed after
-- its last retry (60, 300 and 900 s by default): the latest reason, the attempts of every failed run added
-- up, when it first and last failed, and the last Dagster run. A run of it that succeeds removes the row.
-- `sync-pipeline logs --dead-letters` lists them. One row per EntityType: the primary key is the unique rule.
-- RequeuedAt (UTC) is set by `sync-pipeline requeue`: the customers sensor then launches one run of that
-- customer; a failure of it clears the mark, a success removes the row.
-- A database created before RequeuedAt: ALTER TABLE TB_R_SYNC_DEAD_LETTER ADD RequeuedAt DATETIME2 NULL;
CREATE TABLE TB_R_SYNC_DEAD_LETTER (
    EntityType NVARCHAR(100) NOT NULL,
    Reason NVARCHAR(MAX) NOT NULL,
    Attempts INT NOT NULL,
    FirstFailedOn DATETIME2 NOT NULL,
    LastFailedOn DATETIME2 NOT NULL,
    RunId NVARCHAR(64) NULL,
    RequeuedAt DATETIME2 NULL,
    CONSTRAINT PK_TB_R_SYNC_DEAD_LETTER PRIMARY KEY (EntityType)
);
