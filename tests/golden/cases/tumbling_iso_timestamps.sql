-- The demo query over ISO-8601 event times with a UTC designator or an offset
-- (the event time is the input's `timestamp` field).
SELECT symbol, COUNT(*) AS count, AVG(price) AS avg_price, _window_start, _window_end
FROM trades
GROUP BY symbol
WINDOW TUMBLING(1s)
