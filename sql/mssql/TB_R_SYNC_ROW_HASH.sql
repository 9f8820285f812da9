-- Log database, SQL Server: for syncs that create, update or skip, what each record looked like when the
-- receiver last acknowledged it: the hash of its mapped content (blake2b-128, 32 hex digits) and the
-- receiver's id for it. No row: create it; another hash: update it by ExternalId; the same: no call.
-- The primary key is the unique rule and the clustered index a batch's lookup reads.
CREATE TABLE TB_R_SYNC_ROW_HASH (
    EntityType NVARCHAR(100) NOT NULL,
    EntityId NVARCHAR(255) NOT NULL,
    RowHash CHAR(32) NOT NULL,
    ExternalId NVARCHAR(255) NULL,
    SyncTimestamp DATETIME2 NOT NULL,
    CONSTRAINT PK_TB_R_SYNC_ROW_HASH PRIMARY KEY (EntityType, EntityId)
);
