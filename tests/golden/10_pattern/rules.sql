CREATE STREAM ticks (symbol STRING, ts BIGINT, price DOUBLE) WITH (timestamp = 'ts');

-- A V shape: a start, one or more falling prices, one or more rising prices, within 10 s.
INSERT INTO v_shapes
SELECT symbol, start_price, bottom_price, end_price, drops, start_ts, end_ts
FROM ticks
MATCH_RECOGNIZE (
  PARTITION BY symbol
  ORDER BY ts
  MEASURES
    FIRST(S.price) AS start_price,
    LAST(D.price) AS bottom_price,
    LAST(U.price) AS end_price,
    COUNT(D.*) AS drops,
    S.ts AS start_ts,
    LAST(U.ts) AS end_ts
  ONE ROW PER MATCH
  AFTER MATCH SKIP PAST LAST ROW
  PATTERN (S D+ U+) WITHIN INTERVAL '10' SECOND
  DEFINE
    D AS D.price < PREV(D.price),
    U AS U.price > PREV(U.price)
);
