-- Moving average over the last 3 trades of each symbol, the previous price and
-- the trade's number; rows keep arrival order.
SELECT symbol, ts, price,
       AVG(price) OVER (PARTITION BY symbol ORDER BY ts ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS ma3,
       LAG(price) OVER (PARTITION BY symbol ORDER BY ts) AS prev_price,
       ROW_NUMBER() OVER (PARTITION BY symbol ORDER BY ts) AS n
FROM trades
