DROP TABLE proxy_budgets;
