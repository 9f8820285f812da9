-- Log database, SQL Server: every change a sync with `history: true` made to a stored row of the
-- application's table (`updated`, `deleted`, `restored`), with the old and new values of what changed as
-- JSON (a workflow's export by its sha256), when and by which Dagster run. AppliedOn is set once the
-- change is committed; a row without it belongs to a run that failed or was killed before its commit, so
-- its change never happened. Purged after the retention setting's days.
CREATE TABLE TB_R_SYNC_HISTORY (
    Id INT IDENTITY(1,1) NOT NULL,
    EntityType NVARCHAR(100) NOT NULL,
    RecordKey NVARCHAR(255) NOT NULL,
    Change NVARCHAR(20) NOT NULL,
    OldValues NVARCHAR(MAX) NOT NULL,
    NewValues NVARCHAR(MAX) NOT NULL,
    RunId NVARCHAR(64) NULL,
    ChangedOn DATETIME2 NOT NULL,
    AppliedOn DATETIME2 NULL,
    CONSTRAINT PK_TB_R_SYNC_HISTORY PRIMARY KEY (Id)
);
CREATE INDEX IX_TB_R_SYNC_HISTORY_EntityType_RecordKey ON TB_R_SYNC_HISTORY (EntityType, RecordKey);
CREATE INDEX IX_TB_R_SYNC_HISTORY_RunId ON TB_R_SYNC_HISTORY (RunId);
CREATE INDEX IX_TB_R_SYNC_HISTORY_ChangedOn ON TB_R_SYNC_HISTORY (ChangedOn);
