DROP TABLE integration_settings;
