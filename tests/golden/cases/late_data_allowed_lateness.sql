-- The same input with 500 ms allowed lateness: the watermark trails the max
-- event time by 500 ms, so +900 still counts; +999 (watermark 1000) and +1999
-- (watermark 2000) are late.
SELECT symbol, _window_start, COUNT(*) AS n, SUM(qty) AS volume
FROM trades
GROUP BY symbol
WINDOW TUMBLING(ts, 1s)
WITH ('watermark.allowed_lateness' = '500ms')
