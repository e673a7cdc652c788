-- Exact decimals: SUM keeps the scale, AVG has scale 6 rounded half away from
-- zero, 123.45 * 67.89 = 8381.0205; JSON output writes decimals as strings.
SELECT account,
       SUM(CAST(amount AS DECIMAL(12, 2))) AS total,
       AVG(CAST(amount AS DECIMAL(12, 2))) AS mean,
       MAX(CAST(amount AS DECIMAL(12, 2)) * 67.89) AS biggest_scaled,
       COUNT(*) AS n
FROM payments
GROUP BY account
EMIT FINAL
