"""The README and docs/ link only to files and headings that exist; the README quotes the CV table as it is."""
import re

from eye_clf import data

PAGES = [data.REPO_ROOT / "README.md", *sorted((data.REPO_ROOT / "docs").glob("*.md"))]


def slug(heading):
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_relative_link_names_a_file_and_heading_that_exist():
    assert len(PAGES) >= 3  # README and the two records it sends readers to
    broken = []
    for page in PAGES:
        for target, anchor in re.findall(r"\]\(([^)#\s]*)(?:#([^)\s]*))?\)", page.read_text()):
            if target.startswith(("http:", "https:")):
                continue
            path = (page.parent / target) if target else page
            if not path.exists():
                broken.append(f"{page.name}: {target}")
            elif anchor and anchor not in {slug(h) for h in re.findall(r"^#+ (.*)$", path.read_text(), re.M)}:
                broken.append(f"{page.name}: {target}#{anchor}")
    assert broken == []


def test_slug_is_githubs():
    assert slug("Against the goal of issue 7") == "against-the-goal-of-issue-7"
    assert slug("6. Speed, robustness, calibration") == "6-speed-robustness-calibration"


def table_rows(text):
    return [line for line in text.splitlines() if line.startswith("| ")]


def test_readme_excerpt_of_the_cv_table_is_verbatim():
    """README section 4 quotes rows of the full CV table; each quoted run row must stand in docs/ as it is."""
    readme = PAGES[0].read_text()
    excerpt = readme.split("Some rows of the full table, verbatim", 1)[1].split("\n\n", 2)[1]
    runs = [row for row in table_rows(excerpt)[1:] if not row.startswith("| *")]  # group headings are reworded
    full = set(table_rows((data.REPO_ROOT / "docs" / "recipe_search.md").read_text()))
    assert len(runs) >= 10
    assert [row for row in runs if row not in full] == []
