-- 2-second windows every second: each record is in the two windows that contain it.
SELECT symbol, _window_start, _window_end, COUNT(*) AS n, MAX(price) AS high, SUM(qty) AS volume
FROM trades
GROUP BY symbol
WINDOW SLIDING(ts, INTERVAL '2' SECOND, INTERVAL '1' SECOND)
