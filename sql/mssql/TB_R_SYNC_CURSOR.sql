-- Log database, SQL Server: for syncs that read only the records changed since the last run, each entity's
-- high-water mark (e.g. ModifiedOn, or an integer version) as canonical text: ISO-8601 for a timestamp,
-- decimal digits for an integer. The next run reads the source from it, inclusive. It moves only once every
-- record up to it was delivered or quarantined in TB_R_SYNC_REJECTED, so a record that failed on a
-- transient error is read again, never skipped. One row per entity: the primary key is the unique rule.
CREATE TABLE TB_R_SYNC_CURSOR (
    EntityType NVARCHAR(100) NOT NULL,
    CursorValue NVARCHAR(100) NOT NULL,
    SyncTimestamp DATETIME2 NOT NULL,
    CONSTRAINT PK_TB_R_SYNC_CURSOR PRIMARY KEY (EntityType)
);
