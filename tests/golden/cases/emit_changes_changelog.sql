-- GROUP BY without a window emits changes: after each micro-batch (2 rows here,
-- see the .args file) the current row of every symbol that batch touched.
SELECT symbol, COUNT(*) AS n, SUM(qty) AS volume
FROM trades
GROUP BY symbol
