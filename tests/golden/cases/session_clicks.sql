-- Sessions per user closing after 30 s without a click: a gap of exactly 30 s
-- starts a new session (windows are half-open), and the end is the last click + 30 s.
SELECT user_id, _window_start, _window_end, COUNT(*) AS clicks, COUNT(DISTINCT page) AS pages
FROM clicks
GROUP BY user_id
WINDOW SESSION(ts, 30s)
