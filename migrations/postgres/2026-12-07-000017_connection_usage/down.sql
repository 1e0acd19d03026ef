DROP TABLE connection_usage;
