-- Log database, SQL Server: records the API refused one by one, or that failed validation before
-- sending: one row per record, with how often and when it was first and last refused and the latest
-- status, reason and response excerpt. They stay untracked and are tried again on every later run.
CREATE TABLE TB_R_SYNC_REJECTED (
    Id INT PRIMARY KEY IDENTITY(1,1),
    EntityType NVARCHAR(100) NOT NULL,
    EntityId NVARCHAR(255) NOT NULL,
    RejectionCount INT NOT NULL,
    HttpResponseCode INT NULL,
    Reason NVARCHAR(MAX) NOT NULL,
    ResponseExcerpt NVARCHAR(MAX) NULL,
    FirstRejectedOn DATETIME2 NOT NULL,
    LastRejectedOn DATETIME2 NOT NULL
);
CREATE UNIQUE INDEX UQ_TB_R_SYNC_REJECTED_EntityType_EntityId ON TB_R_SYNC_REJECTED(EntityType, EntityId);
