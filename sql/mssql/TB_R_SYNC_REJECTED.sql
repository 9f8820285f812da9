-- Log database, SQL Server: records the API refused one by one, or that failed validation before
-- sending. They stay untracked and are tried again on every later run; this table is the audit trail.
CREATE TABLE TB_R_SYNC_REJECTED (
    Id INT PRIMARY KEY IDENTITY(1,1),
    EntityType NVARCHAR(100) NOT NULL,
    EntityId NVARCHAR(255) NOT NULL,
    HttpResponseCode INT NULL,
    Reason NVARCHAR(MAX) NOT NULL,
    ResponseExcerpt NVARCHAR(MAX) NULL,
    RejectedOn DATETIME2 NOT NULL DEFAULT GETUTCDATE()
);
CREATE INDEX IX_TB_R_SYNC_REJECTED_EntityType_RejectedOn ON TB_R_SYNC_REJECTED(EntityType, RejectedOn);
