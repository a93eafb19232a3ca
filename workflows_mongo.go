package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// mongoWorkflows keeps workflows in the workflows collection, one
// document each. Claims of steps go to workflow_claims and ends of steps
// to workflow_ends, one document a step, its _id the workflow's and the
// step's: inserting a claim is what makes one process its holder, which
// the unique _id guarantees on MongoDB and FerretDB alike (an update that
// checks a field would not be atomic on FerretDB).
type mongoWorkflows struct {
	coll   *mongo.Collection
	claims *mongo.Collection
	ends   *mongo.Collection
}

func newMongoWorkflows(db *mongo.Database) mongoWorkflows {
	return mongoWorkflows{coll: db.Collection("workflows"), claims: db.Collection("workflow_claims"), ends: db.Collection("workflow_ends")}
}

// ensureIndexes creates the indexes that find a workflow's claims and
// ends.
func (m mongoWorkflows) ensureIndexes(ctx context.Context) error {
	for _, coll := range []*mongo.Collection{m.claims, m.ends} {
		if _, err := coll.Indexes().CreateOne(ctx, mongo.IndexModel{Keys: bson.D{{Key: "workflow_id", Value: 1}}}); err != nil {
			return fmt.Errorf("mongodb: index %s by workflow: %w", coll.Name(), err)
		}
	}
	return nil
}

type mongoWorkflow struct {
	ID          string              `bson:"_id"`
	Owner       string              `bson:"owner"`
	CreatedAt   time.Time           `bson:"created_at"`
	Root        *mongoWorkflowNode  `bson:"root"`
	Steps       []mongoWorkflowStep `bson:"steps"`
	Cancelled   *mongoRevocation    `bson:"cancelled,omitempty"`
	CallbackURL string              `bson:"callback_url,omitempty"`
}

type mongoWorkflowNode struct {
	Kind          string               `bson:"kind"`
	Step          int                  `bson:"step,omitempty"`
	Children      []*mongoWorkflowNode `bson:"children,omitempty"`
	Then          *mongoWorkflowNode   `bson:"then,omitempty"`
	ThenOnFailure bool                 `bson:"then_on_failure,omitempty"`
}

type mongoWorkflowStep struct {
	TaskID         string `bson:"task_id"`
	Type           string `bson:"type"`
	Args           string `bson:"args"` // the JSON the task gets, kept as written
	Priority       string `bson:"priority"`
	ConcurrencyKey string `bson:"concurrency_key,omitempty"`
	Path           string `bson:"path"`
}

type mongoStepClaim struct {
	ID         string    `bson:"_id"`
	WorkflowID string    `bson:"workflow_id"`
	Step       int       `bson:"step"`
	By         string    `bson:"by"`
	At         time.Time `bson:"at"`
}

type mongoStepEnd struct {
	ID         string `bson:"_id"`
	WorkflowID string `bson:"workflow_id"`
	Step       int    `bson:"step"`
	State      string `bson:"state"`
}

func workflowStepID(id string, step int) string { return fmt.Sprintf("%s/%d", id, step) }

func newMongoWorkflowNode(n *workflowNode) *mongoWorkflowNode {
	if n == nil {
		return nil
	}
	out := &mongoWorkflowNode{Kind: n.Kind, Step: n.Step, Then: newMongoWorkflowNode(n.Then), ThenOnFailure: n.ThenOnFailure}
	for _, c := range n.Children {
		out.Children = append(out.Children, newMongoWorkflowNode(c))
	}
	return out
}

func (m *mongoWorkflowNode) node() *workflowNode {
	if m == nil {
		return nil
	}
	out := &workflowNode{Kind: m.Kind, Step: m.Step, Then: m.Then.node(), ThenOnFailure: m.ThenOnFailure}
	for _, c := range m.Children {
		out.Children = append(out.Children, c.node())
	}
	return out
}

func (m mongoWorkflows) createWorkflow(ctx context.Context, w workflow) error {
	doc := mongoWorkflow{ID: w.ID, Owner: w.Owner, CreatedAt: mongoTime(w.CreatedAt), Root: newMongoWorkflowNode(w.Root), CallbackURL: w.CallbackURL}
	for _, s := range w.Steps {
		doc.Steps = append(doc.Steps, mongoWorkflowStep{TaskID: s.TaskID, Type: s.Type, Args: string(s.Args), Priority: s.Priority,
			ConcurrencyKey: s.ConcurrencyKey, Path: s.Path})
	}
	_, err := m.coll.InsertOne(ctx, doc)
	if mongo.IsDuplicateKeyError(err) {
		return errWorkflowExists
	}
	if err != nil {
		return fmt.Errorf("mongodb: create workflow %s: %w", w.ID, err)
	}
	return nil
}

func (m mongoWorkflows) getWorkflow(ctx context.Context, id string) (workflow, error) {
	var doc mongoWorkflow
	err := m.coll.FindOne(ctx, bson.D{{Key: "_id", Value: id}}).Decode(&doc)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return workflow{}, errNotFound
	}
	if err != nil {
		return workflow{}, fmt.Errorf("mongodb: get workflow %s: %w", id, err)
	}
	w := workflow{ID: doc.ID, Owner: doc.Owner, CreatedAt: doc.CreatedAt.UTC(), Root: doc.Root.node(), CallbackURL: doc.CallbackURL}
	for _, s := range doc.Steps {
		w.Steps = append(w.Steps, workflowStep{TaskID: s.TaskID, Type: s.Type, Args: []byte(s.Args), Priority: s.Priority,
			ConcurrencyKey: s.ConcurrencyKey, Path: s.Path})
	}
	if doc.Cancelled != nil {
		w.Cancelled = &revocation{By: doc.Cancelled.By, At: doc.Cancelled.At.UTC()}
	}
	return w, nil
}

func (m mongoWorkflows) deleteWorkflow(ctx context.Context, id string) error {
	if _, err := m.coll.DeleteOne(ctx, bson.D{{Key: "_id", Value: id}}); err != nil {
		return fmt.Errorf("mongodb: delete workflow %s: %w", id, err)
	}
	return nil
}

func (m mongoWorkflows) cancelWorkflow(ctx context.Context, id string, rev revocation) (workflow, error) {
	// Two cancels at once may both write: either's record will do.
	_, err := m.coll.UpdateOne(ctx, bson.D{{Key: "_id", Value: id}, {Key: "cancelled", Value: bson.D{{Key: "$exists", Value: false}}}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "cancelled", Value: mongoRevocation{By: rev.By, At: mongoTime(rev.At)}}}}})
	if err != nil {
		return workflow{}, fmt.Errorf("mongodb: cancel workflow %s: %w", id, err)
	}
	return m.getWorkflow(ctx, id)
}

func (m mongoWorkflows) claimSteps(ctx context.Context, id string, steps []int, by string) (fresh, held []int, err error) {
	if len(steps) == 0 {
		return nil, nil, nil
	}
	now := mongoTime(time.Now())
	docs := make([]mongoStepClaim, len(steps))
	for i, s := range steps {
		docs[i] = mongoStepClaim{ID: workflowStepID(id, s), WorkflowID: id, Step: s, By: by, At: now}
	}
	taken := false
	for i, err := range insertEach(ctx, m.claims, docs) {
		switch {
		case err == nil:
			fresh = append(fresh, steps[i])
		case mongo.IsDuplicateKeyError(err):
			taken = true
		default:
			// An insert that failed may still have been applied: the
			// claims are then found as held by the next try.
			return nil, nil, fmt.Errorf("mongodb: claim steps of workflow %s: %w", id, err)
		}
	}
	if taken {
		claims, err := findAll(ctx, m.claims, bson.D{{Key: "workflow_id", Value: id}, {Key: "by", Value: by}}, options.Find(),
			func(c mongoStepClaim) mongoStepClaim { return c })
		if err != nil {
			return nil, nil, fmt.Errorf("mongodb: claims of workflow %s: %w", id, err)
		}
		for _, c := range claims {
			if c.ID == workflowStepID(id, c.Step) && slices.Contains(steps, c.Step) && !slices.Contains(fresh, c.Step) {
				held = append(held, c.Step)
			}
		}
	}
	slices.Sort(fresh)
	slices.Sort(held)
	return fresh, held, nil
}

func (m mongoWorkflows) runClaimed(ctx context.Context, id string, step int) (bool, error) {
	n, err := m.claims.CountDocuments(ctx, bson.D{{Key: "_id", Value: workflowStepID(id, step) + "/run"}})
	if err != nil {
		return false, fmt.Errorf("mongodb: run claim of step %d of workflow %s: %w", step, id, err)
	}
	return n > 0, nil
}

func (m mongoWorkflows) claimRun(ctx context.Context, id string, step int, copy string) (bool, error) {
	claim := mongoStepClaim{ID: workflowStepID(id, step) + "/run", WorkflowID: id, Step: step, By: copy, At: mongoTime(time.Now())}
	_, err := m.claims.InsertOne(ctx, claim)
	if err == nil {
		return true, nil
	}
	if !mongo.IsDuplicateKeyError(err) {
		return false, fmt.Errorf("mongodb: claim the run of step %d of workflow %s: %w", step, id, err)
	}
	var held mongoStepClaim
	if err := m.claims.FindOne(ctx, bson.D{{Key: "_id", Value: claim.ID}}).Decode(&held); err != nil {
		return false, fmt.Errorf("mongodb: read the run claim of step %d of workflow %s: %w", step, id, err)
	}
	return held.By == copy, nil
}

func (m mongoWorkflows) recordEnd(ctx context.Context, id string, step int, state string) error {
	_, err := m.ends.InsertOne(ctx, mongoStepEnd{ID: workflowStepID(id, step), WorkflowID: id, Step: step, State: state})
	if err != nil && !mongo.IsDuplicateKeyError(err) {
		return fmt.Errorf("mongodb: record the end of step %d of workflow %s: %w", step, id, err)
	}
	return nil
}

func (m mongoWorkflows) ended(ctx context.Context, id string) (map[int]string, error) {
	docs, err := findAll(ctx, m.ends, bson.D{{Key: "workflow_id", Value: id}}, options.Find().SetProjection(bson.D{{Key: "step", Value: 1}, {Key: "state", Value: 1}}),
		func(e mongoStepEnd) mongoStepEnd { return e })
	if err != nil {
		return nil, fmt.Errorf("mongodb: ended steps of workflow %s: %w", id, err)
	}
	out := make(map[int]string, len(docs))
	for _, e := range docs {
		out[e.Step] = e.State
	}
	return out, nil
}
