-- Log database, SQL Server: the retry queue of records: those the API refused one by one, that failed
-- validation before sending, or (sent one call each) whose call failed after its retries. One row per
-- record, with how many runs it failed and when it first and last did, its first reason, and the
-- latest status, reason and response excerpt. They stay unsent and are tried again on every later run,
-- until DeadLetteredOn is set (retries.max_record_attempts failed runs): then they wait for
-- `sync-pipeline resend`.
-- A table created before FirstReason and DeadLetteredOn existed takes them with:
--   ALTER TABLE TB_R_SYNC_REJECTED ADD FirstReason NVARCHAR(MAX) NULL, DeadLetteredOn DATETIME2 NULL;
CREATE TABLE TB_R_SYNC_REJECTED (
    Id INT PRIMARY KEY IDENTITY(1,1),
    EntityType NVARCHAR(100) NOT NULL,
    EntityId NVARCHAR(255) NOT NULL,
    RejectionCount INT NOT NULL,
    HttpResponseCode INT NULL,
    Reason NVARCHAR(MAX) NOT NULL,
    ResponseExcerpt NVARCHAR(MAX) NULL,
    FirstRejectedOn DATETIME2 NOT NULL,
    LastRejectedOn DATETIME2 NOT NULL,
    FirstReason NVARCHAR(MAX) NULL,
    DeadLetteredOn DATETIME2 NULL
);
CREATE UNIQUE INDEX UQ_TB_R_SYNC_REJECTED_EntityType_EntityId ON TB_R_SYNC_REJECTED(EntityType, EntityId);
