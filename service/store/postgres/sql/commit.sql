-- A Transaction (connection.h) ends with this.
COMMIT;
