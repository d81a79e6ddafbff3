// The official Go client (taskcluster client-go) against the services beside the queue of a
// real `taskfold serve`: Auth's clients, roles and scope methods, Secrets, Index and Hooks, as
// tests/node/services.mjs does with the Node client. Built by tests/run.sh and run by
// tests/python/test_go_client.py with TASKCLUSTER_ROOT_URL, TASKCLUSTER_CLIENT_ID and
// TASKCLUSTER_ACCESS_TOKEN; exits non-zero, naming the step, at the first answer that is not
// as Taskcluster's would be.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"reflect"
	"slices"
	"strings"
	"time"

	tcclient "github.com/taskcluster/taskcluster/v97/clients/client-go"
	"github.com/taskcluster/taskcluster/v97/clients/client-go/tcauth"
	"github.com/taskcluster/taskcluster/v97/clients/client-go/tchooks"
	"github.com/taskcluster/taskcluster/v97/clients/client-go/tcindex"
	"github.com/taskcluster/taskcluster/v97/clients/client-go/tcsecrets"
)

func fail(step string, err error) {
	fmt.Printf("FAILED at %s: %v\n", step, err)
	os.Exit(1)
}

func check(step string, err error) {
	if err != nil {
		fail(step, err)
	}
}

func expect(step string, ok bool, detail ...any) {
	if !ok {
		fail(step, fmt.Errorf("unexpected: %v", detail))
	}
}

// refused: the call failed with this HTTP status.
func refused(step string, err error, status int) {
	var apiError *tcclient.APICallException
	if !errors.As(err, &apiError) || apiError.CallSummary.HTTPResponse == nil ||
		apiError.CallSummary.HTTPResponse.StatusCode != status {
		fail(step, fmt.Errorf("expected HTTP %d, got %v", status, err))
	}
}

func main() {
	rootURL := os.Getenv("TASKCLUSTER_ROOT_URL")
	root := &tcclient.Credentials{
		ClientID:    os.Getenv("TASKCLUSTER_CLIENT_ID"),
		AccessToken: os.Getenv("TASKCLUSTER_ACCESS_TOKEN"),
	}
	auth := tcauth.New(root, rootURL)
	secrets := tcsecrets.New(root, rootURL)
	index := tcindex.New(root, rootURL)
	unique := fmt.Sprintf("g%d", time.Now().UnixNano())
	expires := tcclient.Time(time.Now().Add(time.Hour))

	// Auth: a client and a role.
	clientID := "go/" + unique
	roleID := "go-role-" + unique
	made, err := auth.CreateClient(clientID, &tcauth.CreateClientRequest{
		Description: "go", Expires: expires, Scopes: []string{"assume:" + roleID},
	})
	check("createClient", err)
	expect("createClient", made.ClientID == clientID && len(made.AccessToken) >= 22, made)
	role, err := auth.CreateRole(roleID, &tcauth.CreateRoleRequest{
		Description: "r", Scopes: []string{"secrets:get:go/" + unique + "/*"},
	})
	check("createRole", err)
	expect("createRole", slices.Contains(role.ExpandedScopes, "secrets:get:go/"+unique+"/*"), role)
	got, err := auth.Client(clientID)
	check("client", err)
	expect("client", slices.Contains(got.ExpandedScopes, "secrets:get:go/"+unique+"/*"), got)
	_, err = auth.Role(roleID)
	check("role", err)
	clients, err := auth.ListClients("", "", "go/")
	check("listClients", err)
	expect("listClients", len(clients.Clients) >= 1, clients)
	roles, err := auth.ListRoles()
	check("listRoles", err)
	expect("listRoles", len(*roles) >= 1)
	ids, err := auth.ListRoleIds("", "")
	check("listRoleIds", err)
	expect("listRoleIds", slices.Contains(ids.RoleIds, roleID), ids)
	_, err = auth.ListRoles2("", "10")
	check("listRoles2", err)
	_, err = auth.UpdateRole(roleID, &tcauth.CreateRoleRequest{
		Description: "r2", Scopes: []string{"secrets:get:go/" + unique + "/*", "x:y"},
	})
	check("updateRole", err)
	updated, err := auth.UpdateClient(clientID, &tcauth.CreateClientRequest{
		Description: "go2", Expires: expires, Scopes: []string{"assume:" + roleID},
	})
	check("updateClient", err)
	expect("updateClient", updated.Description == "go2", updated)
	expanded, err := auth.ExpandScopes(&tcauth.SetOfScopes{Scopes: []string{"assume:" + roleID}})
	check("expandScopes", err)
	expect("expandScopes", reflect.DeepEqual(expanded.Scopes,
		[]string{"assume:" + roleID, "secrets:get:go/" + unique + "/*", "x:y"}), expanded)
	current, err := auth.CurrentScopes()
	check("currentScopes", err)
	expect("currentScopes", slices.Contains(current.Scopes, "*"), current)

	// Secrets, read by the new client.
	check("secrets.set", secrets.Set("go/"+unique+"/s", &tcsecrets.Secret{
		Secret: json.RawMessage(`{"v":1}`), Expires: expires,
	}))
	theirs := tcsecrets.New(&tcclient.Credentials{ClientID: clientID, AccessToken: made.AccessToken}, rootURL)
	secret, err := theirs.Get("go/" + unique + "/s")
	check("secrets.get as the new client", err)
	var value map[string]int
	check("secrets.get's value", json.Unmarshal(secret.Secret, &value))
	expect("secrets.get", reflect.DeepEqual(value, map[string]int{"v": 1}), string(secret.Secret))
	_, err = theirs.Get("go/other/s")
	refused("secrets.get outside the role", err, 403)
	_, err = auth.DisableClient(clientID)
	check("disableClient", err)
	_, err = theirs.Get("go/" + unique + "/s")
	refused("secrets.get while disabled", err, 401)
	_, err = auth.EnableClient(clientID)
	check("enableClient", err)
	reset, err := auth.ResetAccessToken(clientID)
	check("resetAccessToken", err)
	_, err = theirs.Get("go/" + unique + "/s")
	refused("secrets.get with the old token", err, 401)
	renewed := tcsecrets.New(&tcclient.Credentials{ClientID: clientID, AccessToken: reset.AccessToken}, rootURL)
	_, err = renewed.Get("go/" + unique + "/s")
	check("secrets.get with the new token", err)
	listed, err := secrets.List("", "")
	check("secrets.list", err)
	expect("secrets.list", slices.Contains(listed.Secrets, "go/"+unique+"/s"), listed)
	check("secrets.remove", secrets.Remove("go/"+unique+"/s"))
	_, err = secrets.Get("go/" + unique + "/s")
	refused("secrets.get after remove", err, 404)

	// testAuthenticate with the fixed tester client.
	tester := tcauth.New(&tcclient.Credentials{ClientID: "tester", AccessToken: "no-secret"}, rootURL)
	tested, err := tester.TestAuthenticate(&tcauth.TestAuthenticateRequest{
		ClientScopes: []string{"a:*"}, RequiredScopes: []string{"a:b"},
	})
	check("testAuthenticate", err)
	expect("testAuthenticate", tested.ClientID == "tester", tested)
	_, err = tester.TestAuthenticateGet()
	check("testAuthenticateGet", err)

	// Index.
	ns := "go" + unique
	taskID := "fN1SbArXTPSVFNUvaOlinQ"
	inserted, err := index.InsertTask(ns+".a.latest", &tcindex.InsertTaskRequest{
		TaskID: taskID, Rank: 3, Data: json.RawMessage(`{"x":1}`), Expires: expires,
	})
	check("insertTask", err)
	expect("insertTask", inserted.TaskID == taskID, inserted)
	found, err := index.FindTask(ns + ".a.latest")
	check("findTask", err)
	expect("findTask", found.Rank == 3 && found.Namespace == ns+".a.latest", found)
	tasks, err := index.ListTasks(ns+".a", "", "")
	check("listTasks", err)
	expect("listTasks", len(tasks.Tasks) == 1, tasks)
	namespaces, err := index.ListNamespaces(ns, "", "")
	check("listNamespaces", err)
	expect("listNamespaces", len(namespaces.Namespaces) == 1 && namespaces.Namespaces[0].Name == "a", namespaces)
	atIndex, err := index.FindTasksAtIndex("", "", &tcindex.ListTasksAtIndexRequest{Indexes: []string{ns + ".a.latest"}})
	check("findTasksAtIndex", err)
	expect("findTasksAtIndex", len(atIndex.Tasks) == 1, atIndex)
	check("deleteTask", index.DeleteTask(ns+".a.latest"))
	_, err = index.FindTask(ns + ".a.latest")
	refused("findTask after deleteTask", err, 404)

	// Hooks: a hook whose role may create its task, fired by trigger and by token.
	hooks := tchooks.New(root, rootURL)
	group := "go" + unique
	queueID := "go-interop/w" + unique[len(unique)-8:]
	_, err = auth.CreateRole("hook-id:"+group+"/build", &tcauth.CreateRoleRequest{
		Description: "hook", Scopes: []string{"queue:create-task:highest:" + queueID,
			"queue:scheduler-id:-", "queue:create-task:project:none"},
	})
	check("createRole for the hook", err)
	task := json.RawMessage(`{"taskQueueId": "` + queueID + `", "payload": {"m": "${payload.m}"},
		"metadata": {"name": "go", "description": "d", "owner": "go@example.com", "source": "https://example.com"}}`)
	request := &tchooks.HookCreationRequest{
		Metadata:      tchooks.HookMetadata{Name: "go", Description: "d", Owner: "go@example.com"},
		Task:          task,
		TriggerSchema: json.RawMessage(`{"type": "object"}`),
	}
	created, err := hooks.CreateHook(group, "build", request)
	check("createHook", err)
	expect("createHook", created.HookID == "build" && created.HookGroupID == group, created)
	_, err = hooks.Hook(group, "build")
	check("hook", err)
	request.Schedule = []string{"0 0 * * *"}
	_, err = hooks.UpdateHook(group, "build", request)
	check("updateHook", err)
	list, err := hooks.ListHooks(group)
	check("listHooks", err)
	expect("listHooks", len(list.Hooks) == 1, list)
	groups, err := hooks.ListHookGroups()
	check("listHookGroups", err)
	expect("listHookGroups", slices.Contains(groups.Groups, group), groups)
	payload := tchooks.TriggerHookRequest(json.RawMessage(`{"m": "go"}`))
	fired, err := hooks.TriggerHook(group, "build", &payload)
	check("triggerHook", err)
	var firedTask struct {
		TaskID string `json:"taskId"`
	}
	check("triggerHook's answer", json.Unmarshal(*fired, &firedTask))
	expect("triggerHook", firedTask.TaskID != "", string(*fired))
	token, err := hooks.GetTriggerToken(group, "build")
	check("getTriggerToken", err)
	_, err = hooks.TriggerHookWithToken(group, "build", token.Token, &payload)
	check("triggerHookWithToken", err)
	reset2, err := hooks.ResetTriggerToken(group, "build")
	check("resetTriggerToken", err)
	expect("resetTriggerToken", reset2.Token != token.Token, reset2)
	_, err = hooks.TriggerHookWithToken(group, "build", token.Token, &payload)
	refused("triggerHookWithToken with the old token", err, 401)
	fires, err := hooks.ListLastFires(group, "build", "", "")
	check("listLastFires", err)
	expect("listLastFires", len(fires.LastFires) == 2, fires)
	status, err := hooks.GetHookStatus(group, "build")
	check("getHookStatus", err)
	expect("getHookStatus", strings.Contains(string(status.LastFire), "success"), string(status.LastFire))
	check("removeHook", hooks.RemoveHook(group, "build"))
	_, err = hooks.Hook(group, "build")
	refused("hook after removeHook", err, 404)
	check("deleteRole for the hook", auth.DeleteRole("hook-id:"+group+"/build"))

	check("deleteClient", auth.DeleteClient(clientID))
	check("deleteRole", auth.DeleteRole(roleID))
	_, err = auth.Client(clientID)
	refused("client after deleteClient", err, 404)
	fmt.Printf("the Go client %s: every service method as Taskcluster answers\n", unique)
}
