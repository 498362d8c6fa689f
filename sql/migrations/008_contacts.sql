-- contacts: the clinic's address book (DESIGN §2, §5). Rows with cliniko_patient_id are linked to a Cliniko patient;
-- other systems may own rows too (created_by <> 'cliniko-sync').
--
-- Three cases, told apart by the catalog:
--   * no contacts table: create it (as 001_initial.sql did before this file existed);
--   * the table 001_initial.sql created (active_patients references it): only the email index changes, so that
--     matching by email is case-insensitive on every installation;
--   * another system's table (the clinic's CRM): adopt it. Add only the columns and indexes the tool needs, never
--     drop, retype or rewrite a column or a row, and leave row-level security and every privilege as they are.
--     cliniko_sync/contacts_adoption.py checks before any migration runs that this can succeed (column types,
--     ownership, required columns): a table that cannot be adopted stops `db upgrade` with nothing applied.
--     Readers granted by `db grant` read it through reader_contacts (sql/views), never the table itself.

-- The tables the tool adopted rather than created: they get no row-level security (40_tenant_isolation.sql) unless
-- `db upgrade --contacts-row-security` asked for it (row_security).
CREATE TABLE adopted_tables (
    table_name   text PRIMARY KEY,
    adopted_at   timestamptz NOT NULL DEFAULT now(),
    row_security boolean NOT NULL DEFAULT false
);

DO $$
BEGIN
    IF to_regclass('contacts') IS NULL THEN
        CREATE TABLE contacts (
            id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            organization_id    text NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
            cliniko_patient_id text,
            name               text,
            email              text CHECK (email = lower(email)),
            phone              text CHECK (phone ~ '^\+[1-9][0-9]{1,14}$'),
            created_by         text NOT NULL DEFAULT 'external',
            created_at         timestamptz NOT NULL DEFAULT now(),
            updated_at         timestamptz NOT NULL DEFAULT now(),
            UNIQUE (organization_id, cliniko_patient_id),
            UNIQUE (organization_id, id)
        );
        CREATE INDEX contacts_phone_idx ON contacts (organization_id, phone) WHERE phone IS NOT NULL;
        ALTER TABLE active_patients ADD FOREIGN KEY (organization_id, contact_id)
            REFERENCES contacts (organization_id, id) ON DELETE SET NULL (contact_id);
        -- Readers see no row until sql/views/40_tenant_isolation.sql gives the table its policy.
        ALTER TABLE contacts ENABLE ROW LEVEL SECURITY;
    ELSIF EXISTS (
        SELECT 1 FROM pg_constraint
        WHERE conrelid = 'active_patients'::regclass AND confrelid = 'contacts'::regclass AND contype = 'f'
    ) THEN
        DROP INDEX contacts_email_idx;
    ELSE
        ALTER TABLE contacts
            ADD COLUMN IF NOT EXISTS organization_id    text,
            ADD COLUMN IF NOT EXISTS cliniko_patient_id text,
            ADD COLUMN IF NOT EXISTS name               text,
            ADD COLUMN IF NOT EXISTS email              text,
            ADD COLUMN IF NOT EXISTS phone              text,
            -- A constant default: existing rows read 'external' without the table being rewritten.
            ADD COLUMN IF NOT EXISTS created_by         text NOT NULL DEFAULT 'external',
            -- No default: existing rows keep NULL (when they were made is not known); the tool's own statements
            -- write both times.
            ADD COLUMN IF NOT EXISTS created_at         timestamptz,
            ADD COLUMN IF NOT EXISTS updated_at         timestamptz;
        -- Names of the tool's own, so that they cannot meet the owner's.
        CREATE UNIQUE INDEX cliniko_sync_contacts_patient_key ON contacts (organization_id, cliniko_patient_id);
        CREATE INDEX cliniko_sync_contacts_phone_idx ON contacts (organization_id, phone) WHERE phone IS NOT NULL;
        CREATE INDEX cliniko_sync_contacts_email_idx ON contacts (organization_id, lower(email))
            WHERE email IS NOT NULL;
        INSERT INTO adopted_tables (table_name) VALUES ('contacts');
    END IF;
    IF NOT EXISTS (SELECT 1 FROM adopted_tables) THEN
        -- Matching compares emails case-insensitively (DESIGN §2): another system may write contacts too.
        CREATE INDEX contacts_email_idx ON contacts (organization_id, lower(email)) WHERE email IS NOT NULL;
    END IF;
END
$$;
