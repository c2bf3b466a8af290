using System.Net;
using System.Text;
using System.Text.Json;

namespace OmniConsistency.Api.Tests;

/// <summary>GET /v1/stylizations (the caller's jobs, cursor pages) and DELETE /v1/stylizations/{id}, over HTTP.</summary>
public sealed class JobListAndDeleteTests
{
    private const string AliceKey = "alice-key-0123456789";
    private const string BobKey = "bob-key-9876543210";

    private static void Keys(Dictionary<string, string?> s)
    {
        s["Omni:Auth:ApiKeys:0:Name"] = "alice";
        s["Omni:Auth:ApiKeys:0:Key"] = AliceKey;
        s["Omni:Auth:ApiKeys:1:Name"] = "bob";
        s["Omni:Auth:ApiKeys:1:Key"] = BobKey;
    }

    private static async Task<JsonElement> ListAsync(HttpClient client, string query = "")
    {
        using var response = await client.GetAsync("v1/stylizations" + query);
        var body = await response.Json();
        Assert.True(response.StatusCode == HttpStatusCode.OK, $"List answered {(int)response.StatusCode}: {body}");
        return body;
    }

    private static List<string> Ids(JsonElement page) => page.GetProperty("items").EnumerateArray().Select(j => j.Id()).ToList();

    private static async Task<List<string>> SubmitFinishedAsync(HttpClient client, int count)
    {
        var ids = new List<string>();
        for (var i = 0; i < count; i++)
        {
            var job = await client.SubmitAsync(TestImages.Png(), ("steps", "1"));
            await client.WaitForTerminalAsync(job.Id());
            ids.Add(job.Id());
        }
        return ids;
    }

    [Fact]
    public async Task List_pages_newest_first_and_jobs_submitted_between_pages_do_not_shift_later_pages()
    {
        await using var host = await ServiceHost.StartAsync();
        var client = host.Client;
        var empty = await ListAsync(client);
        Assert.Empty(Ids(empty));
        Assert.False(empty.TryGetProperty("next", out _));

        var original = await SubmitFinishedAsync(client, 5);
        using (var firstResponse = await client.GetAsync("v1/stylizations?limit=2"))
        {
            var first = await firstResponse.Json();
            Assert.Equal(original[^2..].AsEnumerable().Reverse(), Ids(first));
            var next = first.GetProperty("next").GetString()!;
            Assert.Equal($"<{next}>; rel=\"next\"", firstResponse.Headers.GetValues("Link").Single());
            Assert.Contains("limit=2", next);
            Assert.Contains("cursor=" + first.GetProperty("nextCursor").GetString(), next);
            // Items are the job resource GET by id shows.
            var item = first.GetProperty("items")[0];
            var byId = await client.GetJobAsync(item.Id());
            foreach (var field in new[] { "status", "seed", "input", "createdAt", "completedAt", "result", "urls" })
                Assert.Equal(byId.GetProperty(field).GetRawText(), item.GetProperty(field).GetRawText());

            // New jobs arrive between pages: they are newer, so the remaining pages neither repeat nor skip anything.
            await Task.Delay(10);
            var newer = await SubmitFinishedAsync(client, 2);
            var seen = Ids(first);
            var url = next;
            for (var pages = 0; ; pages++)
            {
                Assert.True(pages < 10, "the cursor does not advance");
                var page = await ListAsync(client, new Uri(url).PathAndQuery.Replace("/v1/stylizations", ""));
                seen.AddRange(Ids(page));
                Assert.True(Ids(page).Count <= 2);
                if (!page.TryGetProperty("next", out var n)) break;
                url = n.GetString()!;
            }
            Assert.Equal(original.AsEnumerable().Reverse(), seen);
            Assert.Equal(newer.AsEnumerable().Reverse().Concat(original.AsEnumerable().Reverse()).Take(4), Ids(await ListAsync(client, "?limit=4")));
        }
        // The default page is 20; an exact fit has no next page.
        var all = await ListAsync(client);
        Assert.Equal(7, Ids(all).Count);
        Assert.False(all.TryGetProperty("next", out _));
        Assert.False((await ListAsync(client, "?limit=7")).TryGetProperty("next", out _));
        var times = all.GetProperty("items").EnumerateArray().Select(j => j.GetProperty("createdAt").GetDateTimeOffset()).ToList();
        Assert.Equal(times.OrderDescending(), times);
    }

    [Fact]
    public async Task List_filters_by_status_repeated_or_comma_separated()
    {
        await using var host = await ServiceHost.StartAsync();
        var client = host.Client;
        var done = await SubmitFinishedAsync(client, 2);
        var failed = await client.SubmitAsync(TestImages.Png(), ("steps", "1"), ("prompt", "please fail"));
        await client.WaitForTerminalAsync(failed.Id());

        host.Engine.Gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var running = await client.SubmitAsync(TestImages.Png(), ("steps", "2"));
        await client.WaitForStatusAsync(running.Id(), j => j.Status() == "running");
        var canceled = await client.SubmitAsync(TestImages.Png(), ("steps", "2"));
        Assert.Equal(HttpStatusCode.OK, (await client.PostAsync($"v1/stylizations/{canceled.Id()}/cancel", null)).StatusCode);
        var queued = await client.SubmitAsync(TestImages.Png(), ("steps", "2"));

        Assert.Equal([done[1], done[0]], Ids(await ListAsync(client, "?status=succeeded")));
        Assert.Equal([failed.Id()], Ids(await ListAsync(client, "?status=failed")));
        Assert.Equal([canceled.Id(), running.Id()], Ids(await ListAsync(client, "?status=running&status=canceled")));
        Assert.Equal([queued.Id(), canceled.Id(), running.Id()], Ids(await ListAsync(client, "?status=queued,%20running,canceled")));
        var queuedPage = await ListAsync(client, "?status=queued");
        Assert.Equal(1, queuedPage.GetProperty("items")[0].GetProperty("queuePosition").GetInt32());
        Assert.Equal(1, (await ListAsync(client, "?status=running")).GetProperty("items")[0].GetProperty("progress").GetProperty("step").GetInt32());

        // Paging keeps the filter.
        var page = await ListAsync(client, "?status=succeeded,failed&limit=2");
        Assert.Equal([failed.Id(), done[1]], Ids(page));
        var next = page.GetProperty("next").GetString()!;
        Assert.Contains("status=succeeded,failed", next);
        Assert.Equal([done[0]], Ids(await ListAsync(client, new Uri(next).Query)));
        host.Engine.Gate.TrySetResult();
        await client.WaitForTerminalAsync(queued.Id());
    }

    [Theory]
    [InlineData("?limit=0", "limit")]
    [InlineData("?limit=101", "limit")]
    [InlineData("?limit=ten", "limit")]
    [InlineData("?limit=-1", "limit")]
    [InlineData("?limit=1&limit=2", "limit")]
    [InlineData("?status=done", "status")]
    [InlineData("?status=queued,finished", "status")]
    [InlineData("?status=", "status")]
    [InlineData("?cursor=not-a-cursor", "cursor")]
    [InlineData("?cursor=", "cursor")]
    [InlineData("?statuses=queued", "statuses")]
    public async Task Bad_list_parameters_are_400_validation_problems_naming_the_parameter(string query, string field)
    {
        await using var host = await ServiceHost.StartAsync();
        using var response = await host.Client.GetAsync("v1/stylizations" + query);
        await Api.AssertProblemAsync(response, 400, "validation-error");
        var errors = (await response.Json()).GetProperty("errors");
        Assert.True(errors.TryGetProperty(field, out _), errors.GetRawText());
    }

    [Fact]
    public async Task A_cursor_in_another_format_is_refused()
    {
        await using var host = await ServiceHost.StartAsync();
        foreach (var raw in new[] { "2.638000000000000000.abc", "1.-5.abc", "1.123.ab/cd", "1.123" })
        {
            var cursor = Convert.ToBase64String(Encoding.ASCII.GetBytes(raw)).TrimEnd('=').Replace('+', '-').Replace('/', '_');
            using var response = await host.Client.GetAsync("v1/stylizations?cursor=" + cursor);
            await Api.AssertProblemAsync(response, 400, "validation-error");
        }
    }

    [Fact]
    public async Task List_and_delete_see_only_the_callers_jobs()
    {
        await using var host = await ServiceHost.StartAsync(configure: Keys);
        using var alice = host.NewClient(AliceKey);
        using var bob = host.NewClient(BobKey, bearer: false);
        using var anonymous = host.NewClient();
        var aliceJobs = await SubmitFinishedAsync(alice, 2);
        var bobJobs = await SubmitFinishedAsync(bob, 1);

        Assert.Equal(aliceJobs.AsEnumerable().Reverse(), Ids(await ListAsync(alice)));
        Assert.Equal(bobJobs, Ids(await ListAsync(bob)));
        using (var r = await anonymous.GetAsync("v1/stylizations")) await Api.AssertProblemAsync(r, 401, "unauthorized");
        using (var r = await anonymous.DeleteAsync($"v1/stylizations/{aliceJobs[0]}")) await Api.AssertProblemAsync(r, 401, "unauthorized");

        // Alice's cursor does not show Bob anything of hers: the list is always the caller's.
        var alicePage = await ListAsync(alice, "?limit=1");
        Assert.Empty(Ids(await ListAsync(bob, "?cursor=" + alicePage.GetProperty("nextCursor").GetString())).Intersect(aliceJobs));

        using (var r = await bob.DeleteAsync($"v1/stylizations/{aliceJobs[0]}")) await Api.AssertProblemAsync(r, 404, "not-found");
        await alice.GetJobAsync(aliceJobs[0]);
        using (var r = await alice.DeleteAsync($"v1/stylizations/{aliceJobs[0]}")) Assert.Equal(HttpStatusCode.NoContent, r.StatusCode);
        Assert.Equal([aliceJobs[1]], Ids(await ListAsync(alice)));
        Assert.Equal(bobJobs, Ids(await ListAsync(bob)));
    }

    [Fact]
    public async Task Delete_removes_a_finished_job_and_its_files_and_refuses_a_queued_or_running_one()
    {
        await using var host = await ServiceHost.StartAsync();
        var client = host.Client;
        var blobs = Path.Combine(host.DataDirectory, "blobs");
        host.Engine.Gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var running = await client.SubmitAsync(TestImages.Png(), ("steps", "2"));
        await client.WaitForStatusAsync(running.Id(), j => j.Status() == "running");
        var queued = await client.SubmitAsync(TestImages.Png(), ("steps", "2"));

        foreach (var (job, status) in new[] { (running, "running"), (queued, "queued") })
        {
            using var r = await client.DeleteAsync($"v1/stylizations/{job.Id()}");
            await Api.AssertProblemAsync(r, 409, "job-not-finished");
            var detail = (await r.Json()).GetProperty("detail").GetString()!;
            Assert.Contains(status, detail);
            Assert.Contains($"/v1/stylizations/{job.Id()}/cancel", detail);
            Assert.Equal(status, (await client.GetJobAsync(job.Id())).Status());
        }
        var problem = await (await client.GetAsync("problems/job-not-finished")).Json();
        Assert.Contains("cancel", problem.GetProperty("description").GetString());

        // A canceled queued job still has its photo; the finished one has its result (the worker removed its photo).
        Assert.Equal(HttpStatusCode.OK, (await client.PostAsync($"v1/stylizations/{queued.Id()}/cancel", null)).StatusCode);
        host.Engine.Gate.TrySetResult();
        Assert.Equal("succeeded", (await client.WaitForTerminalAsync(running.Id())).Status());
        var result = Path.Combine(blobs, "results", running.Id() + ".png");
        var photo = Path.Combine(blobs, "inputs", queued.Id());
        Assert.True(File.Exists(result));
        Assert.True(File.Exists(photo));

        foreach (var (job, file) in new[] { (running, result), (queued, photo) })
        {
            using (var r = await client.DeleteAsync($"v1/stylizations/{job.Id()}")) Assert.Equal(HttpStatusCode.NoContent, r.StatusCode);
            Assert.False(File.Exists(file));
            foreach (var path in new[] { "", "/result", "/events" })
                using (var r = await client.GetAsync($"v1/stylizations/{job.Id()}{path}")) await Api.AssertProblemAsync(r, 404, "not-found");
            using (var r = await client.DeleteAsync($"v1/stylizations/{job.Id()}")) await Api.AssertProblemAsync(r, 404, "not-found");
        }
        Assert.Empty(Directory.GetFiles(blobs, "*", SearchOption.AllDirectories));
        Assert.Empty(Ids(await ListAsync(client)));
        using (var r = await client.DeleteAsync("v1/stylizations/0123456789abcdef0123456789abcdef")) await Api.AssertProblemAsync(r, 404, "not-found");
        using (var r = await client.DeleteAsync("v1/stylizations/not..an-id")) await Api.AssertProblemAsync(r, 404, "not-found");
        Assert.Contains("omni_jobs_deleted_total 2\n", await client.GetStringAsync("metrics"));
    }

    [Fact]
    public async Task Delete_tolerates_files_already_gone()
    {
        await using var host = await ServiceHost.StartAsync();
        var job = (await SubmitFinishedAsync(host.Client, 1))[0];
        File.Delete(Path.Combine(host.DataDirectory, "blobs", "results", job + ".png"));
        using (var r = await host.Client.DeleteAsync($"v1/stylizations/{job}")) Assert.Equal(HttpStatusCode.NoContent, r.StatusCode);
        using (var r = await host.Client.GetAsync($"v1/stylizations/{job}")) await Api.AssertProblemAsync(r, 404, "not-found");
    }

    [Fact]
    public async Task Swagger_documents_the_list_and_delete_operations()
    {
        await using var host = await ServiceHost.StartAsync();
        var paths = (await (await host.Client.GetAsync("swagger/v1/swagger.json")).Json()).GetProperty("paths");
        var list = paths.GetProperty("/v1/stylizations").GetProperty("get");
        Assert.False(string.IsNullOrEmpty(list.GetProperty("summary").GetString()));
        Assert.Equal(["status", "limit", "cursor"], list.GetProperty("parameters").EnumerateArray().Select(p => p.GetProperty("name").GetString()));
        Assert.True(list.GetProperty("responses").TryGetProperty("200", out _));
        Assert.True(list.GetProperty("responses").TryGetProperty("400", out _));
        var delete = paths.GetProperty("/v1/stylizations/{id}").GetProperty("delete");
        Assert.False(string.IsNullOrEmpty(delete.GetProperty("summary").GetString()));
        foreach (var status in new[] { "204", "404", "409" }) Assert.True(delete.GetProperty("responses").TryGetProperty(status, out _), status);
    }
}
