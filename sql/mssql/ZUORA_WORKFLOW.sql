-- Application database, SQL Server: the application's own table of Zuora workflows, which the `zuora`
-- sync keeps (sync_pipeline/defs/zuora/defs.yaml). One row per customer and Zuora workflow; the listing's
-- fields, the export's JSON and whether it could be fetched (`ok`, `failed` with the reason: tried again on
-- the next run), and when a complete listing stopped showing it (the row is never deleted). The sync adds
-- no column or table here: its history, conflicts and logs are in the Log database.
CREATE TABLE ZUORA_WORKFLOW (
    customer_id NVARCHAR(100) NOT NULL,
    zuora_id BIGINT NOT NULL,
    name NVARCHAR(255) NOT NULL,
    description NVARCHAR(4000) NULL,
    status NVARCHAR(40) NULL,
    created_at DATETIME2 NULL,
    updated_at DATETIME2 NOT NULL,
    export_json NVARCHAR(MAX) NULL,
    export_status NVARCHAR(10) NOT NULL,
    export_error NVARCHAR(1000) NULL,
    deleted_at DATETIME2 NULL,
    CONSTRAINT PK_ZUORA_WORKFLOW PRIMARY KEY (customer_id, zuora_id)
);
