CREATE STREAM valves (ts BIGINT, valve STRING, open BIGINT)
  WITH (timestamp = 'ts', watermark = '10 seconds', order = 'arrival');

-- With order = 'arrival' the change functions and the pattern see events as they come (the
-- one out of order at ts 2500 included) instead of holding them for the 10 s watermark.
INSERT INTO toggles
SELECT ts, valve, open FROM valves
WHERE changed(open) OVER (PARTITION BY valve) AND lag(open) OVER (PARTITION BY valve) IS NOT NULL;

INSERT INTO open_close
SELECT * FROM valves MATCH_RECOGNIZE (
  PARTITION BY valve ORDER BY ts
  MEASURES FIRST(O.ts) AS opened, C.ts AS closed
  PATTERN (O+ C)
  DEFINE O AS O.open = 1, C AS C.open = 0);
