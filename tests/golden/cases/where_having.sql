-- WHERE drops cheap trades before grouping; HAVING keeps windows with volume >= 5.
SELECT symbol, _window_start, SUM(qty) AS volume, MIN(price) AS low, COUNT(*) AS trades
FROM trades
WHERE price > 10
GROUP BY symbol
WINDOW TUMBLING(ts, 1s)
HAVING SUM(qty) >= 5
