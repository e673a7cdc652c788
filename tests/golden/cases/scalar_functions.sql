-- Scalar functions over a filtered stream; NULLs propagate through || but not
-- through COALESCE; JSON_VALUE of a missing path is NULL.
SELECT id,
       UPPER(TRIM(name)) AS name,
       COALESCE(city, 'unknown') AS city,
       SPLIT_PART(email, '@', 2) AS domain,
       REGEXP_REPLACE(phone, '[^0-9]', '', 'g') AS digits,
       JSON_VALUE(payload, '$.device.os') AS os,
       CASE WHEN score >= 90 THEN 'A' WHEN score >= 75 THEN 'B' ELSE 'C' END AS grade,
       ROUND(score / 3.0, 2) AS third,
       EXTRACT(HOUR FROM ts) AS hour,
       DATE_TRUNC('minute', ts) AS minute,
       LENGTH(name) AS name_len,
       name || '@' || city AS tag
FROM users
WHERE name IS NOT NULL AND email LIKE '%@%'
