-- Foreign keys that only the store's own code could ever satisfy or break, on the hottest path:
-- every stored message writes its addresses and contact links, and every sent outbox row the id
-- of its copy. PostgreSQL checks each such row with a query of its own that also locks the
-- message row (a WAL record for each): about 55 µs per sent message, a sixth of PostgreSQL's
-- work in the outbox benchmark (bench/README.md).
--
-- - message_addresses and message_contacts rows are written with their message (store/ingest,
--   in its transaction) or under a lock on it (the link API, link_earlier_messages), and the
--   purge of removed messages deletes them first (store/messages.cpp).
-- - outbox.sent_message_id points at the sent copy. The constraint also made the purge of a
--   removed sent copy fail for good (a violation on every retention run); the purge now clears
--   the link instead.
ALTER TABLE message_addresses DROP CONSTRAINT message_addresses_message_id_fkey;
ALTER TABLE message_contacts DROP CONSTRAINT message_contacts_message_id_fkey;
ALTER TABLE outbox DROP CONSTRAINT outbox_sent_message_id_fkey;
