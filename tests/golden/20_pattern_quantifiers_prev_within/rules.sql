CREATE STREAM ticks (k STRING, ts BIGINT, v BIGINT, kind STRING) WITH (timestamp = 'ts');

-- Greedy B+ takes every low row it can and leaves one for C; reluctant B+? takes as few.
INSERT INTO greedy
SELECT * FROM ticks MATCH_RECOGNIZE (
  PARTITION BY k ORDER BY ts
  MEASURES FIRST(A.ts) AS started, COUNT(B.*) AS bs, C.ts AS c_at
  PATTERN (A B+ C)
  DEFINE A AS A.kind = 'start', B AS B.v < 50, C AS C.v < 50);

INSERT INTO reluctant
SELECT * FROM ticks MATCH_RECOGNIZE (
  PARTITION BY k ORDER BY ts
  MEASURES FIRST(A.ts) AS started, COUNT(B.*) AS bs, C.ts AS c_at
  PATTERN (A B+? C)
  DEFINE A AS A.kind = 'start', B AS B.v < 50, C AS C.v < 50);

-- PREV reaches 20 rows back, across any batch boundary.
INSERT INTO above_twenty_ago
SELECT * FROM ticks MATCH_RECOGNIZE (
  PARTITION BY k ORDER BY ts
  MEASURES X.ts AS at, X.v AS v, PREV(X.v, 20) AS then_v
  PATTERN (X)
  DEFINE X AS X.kind = 'count' AND X.v > PREV(X.v, 20));

-- WITHIN as Flink: the last row must come less than the bound after the first.
INSERT INTO quick
SELECT * FROM ticks MATCH_RECOGNIZE (
  PARTITION BY k ORDER BY ts
  MEASURES S.ts AS s_at, E.ts AS e_at
  PATTERN (S E) WITHIN INTERVAL '1' SECOND
  DEFINE S AS S.kind = 's', E AS E.kind = 'e');
