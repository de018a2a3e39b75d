-- DEBS 2012 Grand Challenge, Query 2 (monitor energy), as a pipeline of rules over the
-- machine's records (format 'debs2012': replay them with `weir replay`, or read a file with
-- `weir run ... --input debs=FILE.tsv`).
--
-- Relative variation, as these rules read the text: over each 1-second window,
-- (max - min) / average of the phase's power. A second is a violation when the relative
-- variation of any of mf01, mf02, mf03 exceeds 30 %. Power consumption per minute: the
-- average of the total power mf01 + mf02 + mf03 over each minute, and its energy
-- (average power x 60 s).
--
-- Not yet here: the raw recording from 20 s before to 70 s after each violation.
CREATE STREAM debs (ts BIGINT, mf01 BIGINT, mf02 BIGINT, mf03 BIGINT)
  WITH (timestamp = 'ts', format = 'debs2012');

INSERT INTO q2_seconds
SELECT window_start,
       avg(mf01) AS avg_mf01, (max(mf01) - min(mf01)) / avg(mf01) AS rv_mf01,
       avg(mf02) AS avg_mf02, (max(mf02) - min(mf02)) / avg(mf02) AS rv_mf02,
       avg(mf03) AS avg_mf03, (max(mf03) - min(mf03)) / avg(mf03) AS rv_mf03
FROM debs
GROUP BY TUMBLE(ts, INTERVAL '1' SECOND);

INSERT INTO q2_violations
SELECT * FROM q2_seconds
WHERE rv_mf01 > 0.3 OR rv_mf02 > 0.3 OR rv_mf03 > 0.3;

INSERT INTO q2_power
SELECT window_start, avg(mf01 + mf02 + mf03) AS avg_power,
       avg(mf01 + mf02 + mf03) * 60 AS energy, count(*) AS n
FROM debs
GROUP BY TUMBLE(ts, INTERVAL '1' MINUTE);
