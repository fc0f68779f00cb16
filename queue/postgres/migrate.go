package postgres

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
)

// migrationFiles are the schema versions, applied in order: NNN_name.sql.
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

// migration is one schema version.
type migration struct {
	version int
	name    string
	sql     string // with {schema}
}

// migrations returns the embedded migrations in version order.
func migrations() ([]migration, error) {
	names, err := fs.Glob(migrationFiles, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	var ms []migration
	for _, name := range names {
		base := path.Base(name)
		num, _, ok := strings.Cut(base, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("migration %s: name is not NNN_name.sql", base)
		}
		b, err := migrationFiles.ReadFile(name)
		if err != nil {
			return nil, err
		}
		ms = append(ms, migration{version: v, name: base, sql: string(b)})
	}
	slices.SortFunc(ms, func(a, b migration) int { return a.version - b.version })
	for i := 1; i < len(ms); i++ {
		if ms[i].version == ms[i-1].version {
			return nil, fmt.Errorf("migrations %s and %s have the same version", ms[i-1].name, ms[i].name)
		}
	}
	return ms, nil
}

// migrate brings the store's schema up to date in one transaction: it
// creates the schema if needed and applies, in order, each embedded
// migration the schema_migration table does not list. It refuses a schema
// that has versions this code does not know (a newer release migrated it).
func (s *Store) migrate(ctx context.Context) error {
	ms, err := migrations()
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	quoted := pgx.Identifier{s.schema}.Sanitize()
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, lockMigrations, s.schema); err != nil {
			return err
		}
		// A runtime role with only DML privileges can open a schema that a
		// migration role has set up: DDL runs only when something is missing.
		var haveSchema, haveTable bool
		if err := tx.QueryRow(ctx, schemaExists, s.schema).Scan(&haveSchema); err != nil {
			return err
		}
		if !haveSchema {
			if _, err := tx.Exec(ctx, expand(createSchema, quoted)); err != nil {
				return err
			}
		}
		table := pgx.Identifier{s.schema, "schema_migration"}.Sanitize()
		if err := tx.QueryRow(ctx, migrationTableExists, table).Scan(&haveTable); err != nil {
			return err
		}
		if !haveTable {
			if _, err := tx.Exec(ctx, expand(createMigrationTable, quoted)); err != nil {
				return err
			}
		}
		rows, err := tx.Query(ctx, expand(selectMigrations, quoted))
		if err != nil {
			return err
		}
		done, err := pgx.CollectRows(rows, pgx.RowTo[int32])
		if err != nil {
			return err
		}
		for _, v := range done {
			if !slices.ContainsFunc(ms, func(m migration) bool { return m.version == int(v) }) {
				return fmt.Errorf("schema %s has migration %d, unknown to this version of outbound", s.schema, v)
			}
		}
		for _, m := range ms {
			if slices.Contains(done, int32(m.version)) {
				continue
			}
			// Several statements: the simple protocol runs them as one.
			if _, err := tx.Exec(ctx, expand(m.sql, quoted), pgx.QueryExecModeSimpleProtocol); err != nil {
				return fmt.Errorf("migration %s: %w", m.name, err)
			}
			if _, err := tx.Exec(ctx, expand(insertMigration, quoted), m.version); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("postgres: migrate schema %s: %w", s.schema, err)
	}
	return nil
}
