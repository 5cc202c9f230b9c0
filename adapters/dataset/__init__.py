"""The learning dataset outside the database: replay of the log into files and HTTP streams."""
