using System.Net;
using System.Net.Sockets;

namespace OmniConsistency.Api.Webhooks;

/// <summary>A connection refused because the destination address is not allowed (never retried).</summary>
public sealed class WebhookDestinationRefusedException(string message) : Exception(message);

/// <summary>
/// The one HttpClient webhooks are sent with. SSRF guard: every connection is opened here, to resolved addresses
/// that <see cref="DestinationPolicy"/> allows, and the peer the socket actually connected to is checked again
/// (DNS rebinding cannot slip a private address in after a check). No proxy (it would connect for us), no redirects.
/// </summary>
public sealed class WebhookHttpClientFactory : IDisposable
{
    public HttpClient Client { get; }

    public WebhookHttpClientFactory(DestinationPolicy policy)
    {
        var handler = new SocketsHttpHandler
        {
            AllowAutoRedirect = false,
            UseProxy = false,
            UseCookies = false,
            ConnectTimeout = TimeSpan.FromSeconds(10),
            PooledConnectionLifetime = TimeSpan.FromMinutes(5),
            ConnectCallback = (context, ct) => ConnectAsync(policy, context.DnsEndPoint, ct),
        };
        Client = new HttpClient(handler) { Timeout = Timeout.InfiniteTimeSpan };
        Client.DefaultRequestHeaders.UserAgent.ParseAdd("OmniConsistency-Webhooks/1.0");
    }

    private static async ValueTask<Stream> ConnectAsync(DestinationPolicy policy, DnsEndPoint endpoint, CancellationToken ct)
    {
        var addresses = IPAddress.TryParse(endpoint.Host.Trim('[', ']'), out var literal)
            ? [literal]
            : await Dns.GetHostAddressesAsync(endpoint.Host, ct);
        Exception? last = null;
        foreach (var address in addresses)
        {
            if (!policy.IsAllowed(address))
            {
                last = new WebhookDestinationRefusedException($"{endpoint.Host} resolves to {address}, which webhooks may not reach.");
                continue;
            }
            var socket = new Socket(address.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            try
            {
                await socket.ConnectAsync(new IPEndPoint(address, endpoint.Port), ct);
                if (socket.RemoteEndPoint is not IPEndPoint peer || !policy.IsAllowed(peer.Address))
                    throw new WebhookDestinationRefusedException($"Connected peer {socket.RemoteEndPoint} is not an allowed webhook destination.");
                return new NetworkStream(socket, ownsSocket: true);
            }
            catch (Exception ex)
            {
                socket.Dispose();
                if (ex is WebhookDestinationRefusedException or OperationCanceledException) throw;
                last = ex;
            }
        }
        throw last ?? new SocketException((int)SocketError.HostNotFound);
    }

    public void Dispose() => Client.Dispose();
}
