-- Log database, SQL Server: SchedulerLog already exists in production.
-- This creates it for non-production databases (test, staging) with the columns the sync writes.
CREATE TABLE SchedulerLog (
    ID UNIQUEIDENTIFIER NOT NULL PRIMARY KEY,
    ApplicationName NVARCHAR(100) NOT NULL,
    LogID NVARCHAR(100) NOT NULL,
    LogCategory NVARCHAR(100) NOT NULL,
    Activity NVARCHAR(255) NOT NULL,
    ApplicationModule NVARCHAR(100) NOT NULL,
    IPHostName NVARCHAR(100) NOT NULL,
    Status NVARCHAR(20) NOT NULL,
    AdditionalInformation NVARCHAR(MAX) NULL,
    CreatedBy NVARCHAR(100) NOT NULL,
    CreatedOn DATETIME2 NOT NULL,
    ModifiedBy NVARCHAR(100) NULL,
    ModifiedOn DATETIME2 NULL,
    RowStatus BIT NOT NULL,
    ExceptionMessage NVARCHAR(MAX) NULL
);
