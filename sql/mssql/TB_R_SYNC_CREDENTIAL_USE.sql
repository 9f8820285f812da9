-- Log database, SQL Server: for syncs run once per customer, each token a customer's run called the API
-- with: Event `requested` (fetched because none was in force or it was about to expire), `refreshed`
-- (fetched after the API refused the one before, 401) or `reused` (fetched earlier in the same run), when
-- its first call went (UTC), how many calls it carried, the client id and the Dagster run. Never a token or
-- a secret. Rows older than the sync's `retention.days` are purged by its `<sync>_retention` job.
CREATE TABLE TB_R_SYNC_CREDENTIAL_USE (
    Id INT PRIMARY KEY IDENTITY(1,1),
    EntityType NVARCHAR(100) NOT NULL,
    Customer NVARCHAR(100) NOT NULL,
    ClientId NVARCHAR(100) NOT NULL,
    Event NVARCHAR(20) NOT NULL,
    UsedAt DATETIME2 NOT NULL,
    Calls INT NOT NULL,
    RunId NVARCHAR(64) NULL
);
CREATE INDEX IX_TB_R_SYNC_CREDENTIAL_USE_EntityType_UsedAt ON TB_R_SYNC_CREDENTIAL_USE(EntityType, UsedAt);
