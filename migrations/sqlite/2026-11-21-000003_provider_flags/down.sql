DROP TABLE provider_flags;
