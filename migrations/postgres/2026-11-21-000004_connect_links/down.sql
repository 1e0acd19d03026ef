DROP TABLE connect_links;
