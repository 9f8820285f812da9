-- Log database, SQL Server: one row per entity being synced right now. A run inserts its row
-- before sending and deletes it at the end; a second run finds the key taken and waits or stops.
-- ExpiresOn lets a crashed run's lock be taken over.
CREATE TABLE TB_R_SYNC_LOCK (
    EntityType NVARCHAR(100) NOT NULL PRIMARY KEY,
    Owner NVARCHAR(200) NOT NULL,
    AcquiredOn DATETIME2 NOT NULL,
    ExpiresOn DATETIME2 NOT NULL
);
