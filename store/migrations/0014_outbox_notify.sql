-- Rows queued by anybody (another daemon sharing the database, a script, the CRM) wake the
-- outbox workers of every daemon at once instead of at their next poll. One notification per
-- inserting statement, delivered at its commit; PostgreSQL folds repeats within a transaction.
CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('mailgate_outbox', '');
  RETURN NULL;
END
$$;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();
