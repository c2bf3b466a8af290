using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Options;
using OmniConsistency.Api.Options;

namespace OmniConsistency.Api.Webhooks;

/// <summary>
/// Which addresses webhooks may reach. Private, loopback, link-local (cloud metadata at 169.254.169.254), CGNAT,
/// multicast and reserved ranges are refused unless <see cref="WebhookOptions.AllowPrivateAddresses"/> or an
/// <see cref="WebhookOptions.AllowedNetworks"/> entry allows them. The check that matters runs on the address a
/// socket actually connected to (<see cref="WebhookHttpClientFactory"/>); the submit-time check only gives early errors.
/// </summary>
public sealed class DestinationPolicy
{
    private static readonly IPNetwork[] Blocked =
    [
        IPNetwork.Parse("0.0.0.0/8"), IPNetwork.Parse("10.0.0.0/8"), IPNetwork.Parse("100.64.0.0/10"), IPNetwork.Parse("127.0.0.0/8"),
        IPNetwork.Parse("169.254.0.0/16"), IPNetwork.Parse("172.16.0.0/12"), IPNetwork.Parse("192.0.0.0/24"), IPNetwork.Parse("192.0.2.0/24"),
        IPNetwork.Parse("192.168.0.0/16"), IPNetwork.Parse("198.18.0.0/15"), IPNetwork.Parse("198.51.100.0/24"), IPNetwork.Parse("203.0.113.0/24"),
        IPNetwork.Parse("224.0.0.0/4"), IPNetwork.Parse("240.0.0.0/4"),
        IPNetwork.Parse("::/128"), IPNetwork.Parse("::1/128"), IPNetwork.Parse("64:ff9b::/96"), IPNetwork.Parse("100::/64"),
        IPNetwork.Parse("2001:db8::/32"), IPNetwork.Parse("fc00::/7"), IPNetwork.Parse("fe80::/10"), IPNetwork.Parse("ff00::/8"),
    ];

    private readonly bool _allowAll;
    private readonly IPNetwork[] _allowed;

    public DestinationPolicy(IOptions<WebhookOptions> options)
    {
        _allowAll = options.Value.AllowPrivateAddresses;
        _allowed = options.Value.AllowedNetworks.Select(IPNetwork.Parse).ToArray();
    }

    public bool IsAllowed(IPAddress address)
    {
        if (address.IsIPv4MappedToIPv6) address = address.MapToIPv4();
        if (_allowAll || _allowed.Any(n => n.Contains(address))) return true;
        return !Blocked.Any(n => n.BaseAddress.AddressFamily == address.AddressFamily && n.Contains(address));
    }

    /// <summary>Checks a webhook URL at submit time; returns why it is refused, or null.</summary>
    public async Task<string?> CheckUrlAsync(string url, CancellationToken ct)
    {
        if (!Uri.TryCreate(url, UriKind.Absolute, out var uri) || (uri.Scheme != Uri.UriSchemeHttp && uri.Scheme != Uri.UriSchemeHttps))
            return "must be an absolute http or https URL";
        if (!string.IsNullOrEmpty(uri.UserInfo)) return "must not contain user information";
        if (url.Length > 2048) return "is longer than 2048 characters";
        if (IPAddress.TryParse(uri.IdnHost.Trim('[', ']'), out var literal))
            return IsAllowed(literal) ? null : $"points at {literal}, a private, loopback, link-local or reserved address";
        IPAddress[] addresses;
        try
        {
            using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
            cts.CancelAfter(TimeSpan.FromSeconds(3));
            addresses = await Dns.GetHostAddressesAsync(uri.IdnHost, cts.Token);
        }
        catch (Exception ex) when (ex is SocketException or OperationCanceledException && !ct.IsCancellationRequested)
        {
            // Unresolvable now is not proof of anything; delivery re-checks every connection.
            return null;
        }
        var refused = addresses.FirstOrDefault(a => !IsAllowed(a));
        return refused is null ? null : $"resolves to {refused}, a private, loopback, link-local or reserved address";
    }
}
