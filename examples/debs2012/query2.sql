-- DEBS 2012 Grand Challenge, Query 2 (monitor energy), as a pipeline of rules over the
-- records of `debs` (declared in debs.sql).
--
-- The reading these rules implement:
--  * relative variation of a phase over a 1-second window: (max - min) / average of its power;
--  * a second is a violation when the relative variation of any of mf01, mf02, mf03 exceeds
--    30 %; the violation's time is the start of that second;
--  * the raw recording: every record from 20 s before to 70 s after a violation, each record
--    once, so that violations whose recordings overlap give one recording from 20 s before the
--    first to 70 s after the last (q2_recording holds the records, q2_recordings one row per
--    merged recording with its bounds);
--  * power consumption per minute: the average of the total power mf01 + mf02 + mf03 over
--    each minute, and its energy (average power x 60 s).

INSERT INTO q2_seconds
SELECT window_start,
       avg(mf01) AS avg_mf01, (max(mf01) - min(mf01)) / avg(mf01) AS rv_mf01,
       avg(mf02) AS avg_mf02, (max(mf02) - min(mf02)) / avg(mf02) AS rv_mf02,
       avg(mf03) AS avg_mf03, (max(mf03) - min(mf03)) / avg(mf03) AS rv_mf03
FROM debs
GROUP BY TUMBLE(ts, INTERVAL '1' SECOND);

-- A violation takes the time of the start of its second (its window's result comes at the
-- end, hence the watermark held back by a second).
CREATE STREAM q2_violations (window_start BIGINT)
  WITH (timestamp = 'window_start', watermark = '1 second');

INSERT INTO q2_violations
SELECT * FROM q2_seconds
WHERE rv_mf01 > 0.3 OR rv_mf02 > 0.3 OR rv_mf03 > 0.3;

-- The raw records around violations, each once however many violations cover it.
INSERT INTO q2_recording
SELECT r.ts, r.ts_ns, r.mf01, r.mf02, r.mf03 FROM debs AS r
LEFT SEMI JOIN q2_violations AS v
  ON v.window_start BETWEEN r.ts - INTERVAL '70' SECOND AND r.ts + INTERVAL '20' SECOND;

-- One row per merged recording: violations less than 90 s apart share one.
INSERT INTO q2_recordings
SELECT window_start - INTERVAL '20' SECOND AS recording_from,
       window_end - INTERVAL '90' SECOND + INTERVAL '70' SECOND AS recording_to,
       count(*) AS violations
FROM q2_violations
GROUP BY SESSION(window_start, INTERVAL '90' SECOND);

INSERT INTO q2_power
SELECT window_start, avg(mf01 + mf02 + mf03) AS avg_power,
       avg(mf01 + mf02 + mf03) * 60 AS energy, count(*) AS n
FROM debs
GROUP BY TUMBLE(ts, INTERVAL '1' MINUTE);
