-- outbox_list (id DESC) duplicated the primary key, which PostgreSQL scans backwards just as well
-- for the outbox list's ORDER BY id DESC. Every version of an outbox row (queued, sending, sent:
-- three per message) paid an entry in it.
DROP INDEX outbox_list;
