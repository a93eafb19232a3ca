package tasks

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"

	schemagen "github.com/invopop/jsonschema"
)

// UserID is the guide's user_id: an integer in its examples, a string in
// many real systems. Both are accepted and kept as a string, so a task
// submitted with 42 and one with "42" belong to the same user.
type UserID string

// maxUserIDLength bounds a user id given as a string.
const maxUserIDLength = 100

func (u *UserID) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*u = UserID(s)
		return nil
	}
	n, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil {
		return fmt.Errorf("user_id %s: want a whole number or a string", b)
	}
	*u = UserID(strconv.FormatInt(n, 10))
	return nil
}

// JSONSchema is the schema invopop/jsonschema gives a UserID field.
func (UserID) JSONSchema() *schemagen.Schema {
	minLen, maxLen := uint64(1), uint64(maxUserIDLength)
	return &schemagen.Schema{
		Description: "The user the task is for: a whole number, as in the guide, or a string.",
		OneOf: []*schemagen.Schema{
			{Type: "integer", Minimum: json.Number("0")},
			{Type: "string", MinLength: &minLen, MaxLength: &maxLen},
		},
	}
}
