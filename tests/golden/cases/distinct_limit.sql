-- DISTINCT emits the first occurrence of each value (NULL is one value), and
-- LIMIT stops the job after 3 rows.
SELECT DISTINCT symbol FROM trades LIMIT 3
