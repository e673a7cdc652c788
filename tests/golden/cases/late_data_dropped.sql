-- Out-of-order input, no allowed lateness: a record whose window already
-- closed (window end <= max event time seen before it) is dropped and counted.
-- Late here: ts +900 (after +1200), +999 (after +1500), +1999 (after +2500).
SELECT symbol, _window_start, COUNT(*) AS n, SUM(qty) AS volume
FROM trades
GROUP BY symbol
WINDOW TUMBLING(ts, 1s)
