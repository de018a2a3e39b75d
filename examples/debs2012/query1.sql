-- DEBS 2012 Grand Challenge, Query 1 (monitor the chemical additive sensors), as a pipeline of
-- rules over the records of `debs` (declared in debs.sql). The stages follow the paper's
-- operator groups: state changes -> correlation -> alarm and trend.
--
-- The reading these rules implement (the official text leaves it open):
--  * a state change is a record whose value differs from the previous record's, either
--    direction; the first record of a signal is not a change;
--  * the delay of a valve change is its time minus the time of the LAST sensor change of its
--    pair before it (nanoseconds), rising and falling edges alike; a valve change with no
--    sensor change since the previous valve change gives no delay;
--  * alarm: the newest delay exceeds 1.01 x the smallest delay of its pair within the last
--    24 hours (event time, the newest included);
--  * trend: least squares over the pair's delays of the last 24 hours, re-fitted on every new
--    delay, emitted as the plot's parameters: delay(t) = intercept_ns + slope_ns_per_hour *
--    (t - window_start) / 1 h.
-- Alternatives are edits of these rules, not of the engine: pair rising edges with rising
-- edges by adding `AND V.valve = LAST(S.sensor)` to V's DEFINE; alarm on any rise within 24 h
-- by comparing with first_value instead of min.
--
-- The signal pairs (bm05->bm08, bm06->bm09, bm07->bm10) are named only in stage 1: for the
-- organisers' later suggestion, replace bm05/bm06/bm07 with pp04/pp05/pp06 there (and declare
-- them in debs.sql).

-- Stage 1: the state changes of each sensor/valve pair, one row per record in which the
-- sensor or the valve of the pair changed. A node stamps each with the time it sends it
-- (k_sent_ns, the paper's K_sentts; rcv_ns is its m2_rcvts): `weir bench debs` reads both.
CREATE STREAM q1_changes WITH (timestamp = 'ts', order = 'arrival', sent_at = 'k_sent_ns');

INSERT INTO q1_changes
SELECT ts, ts_ns, rcv_ns, 'bm05-bm08' AS pair,
       'bm05' AS sensor_name, bm05 AS sensor, changed(bm05) AS sensor_changed,
       'bm08' AS valve_name, bm08 AS valve, changed(bm08) AS valve_changed
FROM debs WHERE lag(ts) IS NOT NULL AND (changed(bm05) OR changed(bm08));

INSERT INTO q1_changes
SELECT ts, ts_ns, rcv_ns, 'bm06-bm09' AS pair,
       'bm06' AS sensor_name, bm06 AS sensor, changed(bm06) AS sensor_changed,
       'bm09' AS valve_name, bm09 AS valve, changed(bm09) AS valve_changed
FROM debs WHERE lag(ts) IS NOT NULL AND (changed(bm06) OR changed(bm09));

INSERT INTO q1_changes
SELECT ts, ts_ns, rcv_ns, 'bm07-bm10' AS pair,
       'bm07' AS sensor_name, bm07 AS sensor, changed(bm07) AS sensor_changed,
       'bm10' AS valve_name, bm10 AS valve, changed(bm10) AS valve_changed
FROM debs WHERE lag(ts) IS NOT NULL AND (changed(bm07) OR changed(bm10));

-- Stage 2: correlation. Each valve change with the last sensor change before it.
CREATE STREAM q1_delays WITH (timestamp = 'ts', order = 'arrival');

INSERT INTO q1_delays
SELECT * FROM q1_changes MATCH_RECOGNIZE (
  PARTITION BY pair ORDER BY ts
  MEASURES V.ts AS ts, LAST(S.ts_ns) AS sensor_ts_ns, V.ts_ns AS valve_ts_ns,
           V.ts_ns - LAST(S.ts_ns) AS delay_ns, LAST(S.sensor) AS sensor, V.valve AS valve,
           V.rcv_ns AS rcv_ns
  ONE ROW PER MATCH
  AFTER MATCH SKIP PAST LAST ROW
  PATTERN (S+ V)
  DEFINE S AS S.sensor_changed, V AS V.valve_changed);

-- Stage 3a: alarm when a delay rose by more than 1 % within 24 hours.
INSERT INTO q1_alarms
SELECT pair, window_end AS ts, last_value(delay_ns) AS delay_ns,
       min(delay_ns) AS min_delay_ns_24h, count(*) AS delays_24h
FROM q1_delays
GROUP BY pair, SLIDING(ts, INTERVAL '24' HOUR)
HAVING last_value(delay_ns) > 1.01 * min(delay_ns);

-- Stage 3b: the trend of the delay over the last 24 hours, as plot parameters.
INSERT INTO q1_trend
SELECT pair, window_start, window_end AS ts, count(*) AS delays_24h,
       regr_slope(delay_ns, ts) * 3600000 AS slope_ns_per_hour,
       regr_intercept(delay_ns, ts) + regr_slope(delay_ns, ts) * window_start AS intercept_ns
FROM q1_delays
GROUP BY pair, SLIDING(ts, INTERVAL '24' HOUR);
