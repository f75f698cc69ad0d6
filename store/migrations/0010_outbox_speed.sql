-- The outbox's send rate (issue 5's benchmark).
--
-- A sending connection takes a mailbox's due rows a chunk at a time, oldest first
-- (store/outbox.cpp, outbox_lock_due: mailbox, state queued or retrying, next_attempt_at passed,
-- ORDER BY id LIMIT n FOR UPDATE SKIP LOCKED). Without an index on (mailbox_id, id) among the due
-- rows PostgreSQL read every due row of every mailbox, or walked the whole outbox by id, for each
-- chunk: the cost grew with the queue (a mailing of 10,000 rows: 500 chunks, each reading the rest).
-- With it each chunk reads about its own rows. Rows leave the index as soon as they are claimed.
CREATE INDEX outbox_claim ON outbox (mailbox_id, id) WHERE state IN ('queued', 'retrying');
