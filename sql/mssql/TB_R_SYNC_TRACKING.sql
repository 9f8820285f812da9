-- Log database, SQL Server (production). Exactly as the product owner specified.
CREATE TABLE TB_R_SYNC_TRACKING (
    Id INT PRIMARY KEY IDENTITY(1,1),
    EntityType NVARCHAR(100) NOT NULL,
    EntityId NVARCHAR(255) NOT NULL,
    SyncTimestamp DATETIME2 NOT NULL DEFAULT GETUTCDATE()
);
CREATE UNIQUE INDEX UQ_TB_R_SYNC_TRACKING_EntityType_EntityId ON TB_R_SYNC_TRACKING(EntityType, EntityId);
