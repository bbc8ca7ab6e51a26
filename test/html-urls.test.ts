import { describe, expect, it } from 'vitest'
import { authoredSchemes, neutralizeUnsafeUrls } from '../src/lib/html-urls'

describe('neutralizeUnsafeUrls', () => {
  it('replaces a URL attribute naming another scheme than http(s), mailto, tel or cid with #', () => {
    expect(neutralizeUnsafeUrls('<a class="x" href="javascript:alert(1)" title="t">x</a>')).toBe('<a class="x" href="#" title="t">x</a>')
    expect(neutralizeUnsafeUrls("<A HREF='&#106;avascript&#58;alert(1)'>x</A>")).toBe('<A HREF="#">x</A>')
    expect(neutralizeUnsafeUrls('<a href=java&#x09;script:alert(1)>x</a>')).toBe('<a href="#">x</a>')
    expect(neutralizeUnsafeUrls('<form action="javascript:x"><button formaction="vbscript:y">')).toBe('<form action="#"><button formaction="#">')
    expect(neutralizeUnsafeUrls('<img src="data:text/html,x"><img src="data:image/gif;base64,R0lG">')).toBe('<img src="#"><img src="data:image/gif;base64,R0lG">')
    expect(neutralizeUnsafeUrls('<a href="data:image/gif;base64,R0lG">')).toBe('<a href="#">')
    expect(neutralizeUnsafeUrls('<object data="javascript:x"></object>')).toBe('<object data="#"></object>')
  })

  it('reads tags as a browser does: quoted >, attributes without a space between, references without ;', () => {
    expect(neutralizeUnsafeUrls('<a title="Prices > 10% off" href="javascript:x">')).toBe('<a title="Prices > 10% off" href="#">')
    expect(neutralizeUnsafeUrls('<a style="color:red"href="javascript:x">')).toBe('<a style="color:red"href="#">')
    expect(neutralizeUnsafeUrls("<a title='it>s'href=javascript:x>")).toBe("<a title='it>s'href=\"#\">")
    expect(neutralizeUnsafeUrls('<a/href="javascript:x">')).toBe('<a/href="#">')
    expect(neutralizeUnsafeUrls('<a href="java&Tab;script&colon;x">')).toBe('<a href="#">')
    expect(neutralizeUnsafeUrls('<a href="&#106avascript:x">')).toBe('<a href="#">')
    expect(neutralizeUnsafeUrls('<a href\n=\n"\n javascript:x">')).toBe('<a href\n=\n"#">')
  })

  it('skips comments and end tags as a browser does, so no tag hides in what it takes for text', () => {
    expect(neutralizeUnsafeUrls("<!-- <a title=' --><a href=\"javascript:x\">")).toBe('<!-- <a title=\' --><a href="#">')
    expect(neutralizeUnsafeUrls('<!--><a href="javascript:x">')).toBe('<!--><a href="#">')
    expect(neutralizeUnsafeUrls('<!-- x --!><a href="javascript:x">')).toBe('<!-- x --!><a href="#">')
    expect(neutralizeUnsafeUrls("</p title='>'><a href=\"javascript:x\">")).toBe("</p title='>'><a href=\"#\">")
    expect(neutralizeUnsafeUrls('<!doctype html><? x ?><a href="javascript:x">')).toBe('<!doctype html><? x ?><a href="#">')
  })

  it('leaves web, mail, phone and inline-image links, relative links, fragments and text alone', () => {
    const html = '<p>javascript:alert(1) href="javascript:x"</p><a href="https://a.example/x?y=1&amp;z=2">a</a><a href="mailto:a@b.example">m</a><a href="tel:+15551234">t</a><img src="cid:logo"><a href="#top">t</a><a href="/p">p</a><a data-x="javascript:ok" hreflang="en">'
    expect(neutralizeUnsafeUrls(html)).toBe(html)
  })

  it("keeps the schemes the template's author wrote, but never script or data", () => {
    const template = '<a href="sms:+15551234">Text us</a> <a href="webcal://example.com/c.ics">Calendar</a> <a href="{{deep}}">App</a> <a href="javascript:void(0)">no</a>'
    const schemes = authoredSchemes(template)
    expect([...schemes].sort()).toEqual(['cid', 'http', 'https', 'mailto', 'sms', 'tel', 'webcal'])
    const rendered = '<a href="sms:+15551234">Text us</a> <a href="webcal://example.com/c.ics">Calendar</a> <a href="myapp://open">App</a> <a href="javascript:void(0)">no</a>'
    expect(neutralizeUnsafeUrls(rendered, schemes)).toBe('<a href="sms:+15551234">Text us</a> <a href="webcal://example.com/c.ics">Calendar</a> <a href="#">App</a> <a href="#">no</a>')
  })
})
