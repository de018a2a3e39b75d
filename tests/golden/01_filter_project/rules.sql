CREATE STREAM sensors (id BIGINT, ts BIGINT, temp DOUBLE, name STRING, meta JSON)
  WITH (timestamp = 'ts');

INSERT INTO hot
SELECT id, upper(name) AS name, temp * 2 AS double_temp,
       CASE WHEN temp > 30 THEN 'hot' ELSE 'warm' END AS level,
       CAST(temp AS BIGINT) AS t_int, meta.site AS site, meta['tags'][0] AS first_tag,
       name LIKE 'b%' AS starts_b, id IN (1, 3) AS odd, coalesce(meta.missing, 'none') AS m,
       round(temp / 3, 2) AS third
FROM sensors
WHERE temp > 20 AND name IS NOT NULL;
