-- Deterministic data for schema.sql; `:scale` users (psql: `psql -v scale=200000 -f data.sql`).
-- Rows: users s, vote_types 5, posts 3s, badges 1.5s, comments 4s, votes 10s, post_links s/2 (s >= 100).
INSERT INTO vote_types VALUES (1, 'UpMod'), (2, 'DownMod'), (3, 'Favorite'), (4, 'Close'), (5, 'Spam');
INSERT INTO users (display_name, email, reputation, created_at, location, about, karma)
SELECT 'user ' || g, 'u' || g || '@example.com', (g * 7919) % 50000,
       timestamptz '2020-01-01 00:00:00+00' + g * interval '17 minutes',
       CASE WHEN g % 5 = 0 THEN NULL ELSE 'city ' || (g % 97) END,
       CASE WHEN g % 3 = 0 THEN NULL ELSE decode(md5(g::text), 'hex') END,
       ((g * 31) % 100000) / 100.0
FROM generate_series(1, :scale) g;
INSERT INTO posts (parent_id, owner_id, title, body, tags, score, created_at, meta, uid)
SELECT CASE WHEN g <= :scale THEN NULL ELSE ((g * 13) % :scale) + 1 END,
       ((g * 7) % :scale) + 1,
       CASE WHEN g <= :scale THEN 'Question ' || g || ' about ' || (ARRAY['rust', 'sql', 'arrow', 'etl'])[g % 4 + 1] END,
       repeat('body text ' || g || ' ', 1 + g % 8),
       CASE WHEN g <= :scale THEN ARRAY['tag' || g % 10, 'tag' || g % 7] END,
       (g * 37) % 200 - 50,
       timestamp '2021-01-01' + g * interval '3 minutes 7 seconds',
       CASE WHEN g % 4 = 0 THEN jsonb_build_object('views', g % 1000, 'edited', g % 2 = 0) END,
       CASE WHEN g % 6 = 0 THEN NULL ELSE md5('p' || g)::uuid END
FROM generate_series(1, 3 * :scale) g;
INSERT INTO badges (user_id, name, awarded_at, class)
SELECT (g % :scale) + 1, (ARRAY['Teacher', 'Student', 'Editor', 'Critic'])[g % 4 + 1],
       timestamptz '2022-01-01 00:00:00+00' + g * interval '11 minutes', g % 3 + 1
FROM generate_series(1, 3 * :scale / 2) g;
INSERT INTO comments (post_id, user_id, body, created_at, score)
SELECT ((g * 11) % (3 * :scale)) + 1, CASE WHEN g % 50 = 0 THEN NULL ELSE ((g * 3) % :scale) + 1 END,
       'comment ' || g || ' ' || repeat('x', g % 40), timestamptz '2022-06-01 00:00:00+00' + g * interval '1 minute',
       CASE WHEN g % 9 = 0 THEN NULL ELSE (g % 20)::smallint END
FROM generate_series(1, 4 * :scale) g;
INSERT INTO votes (post_id, user_id, vote_type_id, created_on, weight)
SELECT (g % (3 * :scale)) + 1, ((g * 7) % :scale) + 1, (g / (3 * :scale)) % 5 + 1,
       date '2023-01-01' + (g % 700), CASE WHEN g % 13 = 0 THEN NULL ELSE 1.0 / (1 + g % 17) END
FROM generate_series(0, 10 * :scale - 1) g;
INSERT INTO post_links (post_id, related_post_id, link_type, created_at)
SELECT g, g + 1 + (g * 3) % 100, 1 + g % 3, timestamptz '2023-06-01 00:00:00+00' + g * interval '5 minutes'
FROM generate_series(1, :scale / 2) g;
