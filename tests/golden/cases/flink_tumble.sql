-- Flink's window table function: window_start/window_end name the window bounds.
SELECT symbol, window_start, window_end, SUM(qty) AS volume, COUNT(*) AS n
FROM TABLE(TUMBLE(TABLE trades, DESCRIPTOR(ts), INTERVAL '2' SECOND))
GROUP BY symbol, window_start, window_end
